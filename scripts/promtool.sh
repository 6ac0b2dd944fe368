#!/usr/bin/env bash
# promtool.sh: make sure promtool is on the PATH, for `make test`'s checks of
# the alert rules (deploy/prometheus): `promtool check rules` and `promtool
# test rules`.
#
# Installs Debian's `prometheus` package (which ships promtool) with apt-get
# when promtool is missing, as root or through sudo, without starting the
# server. Idempotent and quiet when it is already there.
set -euo pipefail

say() { echo "promtool: $*" >&2; }
die() {
	echo "promtool: ERROR: $*" >&2
	exit 1
}

if command -v promtool >/dev/null 2>&1; then
	exit 0
fi

command -v apt-get >/dev/null 2>&1 ||
	die "promtool is missing and apt-get is not available: install Prometheus' promtool yourself"

SUDO=()
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install prometheus with apt-get"
	SUDO=(sudo)
fi

say "installing prometheus (for promtool) with apt-get"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null ||
	die "apt-get update failed"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null ||
	die "apt-get install prometheus failed"
command -v promtool >/dev/null 2>&1 || die "apt-get installed prometheus but promtool is not on the PATH"
say "$(promtool --version 2>&1 | head -1)"
