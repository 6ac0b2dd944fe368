#!/usr/bin/env bash
# promtool.sh: make sure promtool is on the PATH, for `make test`'s checks of
# the alert rules (deploy/prometheus): `promtool check rules` and `promtool
# test rules`.
#
# Installs Debian's `prometheus` package (which ships promtool) with apt-get
# when promtool is missing, as root or through sudo, without starting the
# server. Idempotent and quiet when it is already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LIB_NAME=promtool
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

command -v promtool >/dev/null 2>&1 && exit 0
need_package "command -v promtool" prometheus "for promtool" --no-install-recommends
say "$(promtool --version 2>&1 | head -1)"
