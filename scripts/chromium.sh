#!/usr/bin/env bash
# chromium.sh: make sure Debian's Chromium is at /usr/bin/chromium, for the
# browser test (e2e/browser), which drives it headless with chromedp.
#
# Installs the `chromium` package with apt-get when the binary is missing
# (as root, or through sudo). Idempotent and quiet when it is already there.
# Test tools that download a browser of their own cannot work on a machine
# without internet; the distribution's package can.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LIB_NAME=chromium
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

CHROMIUM=/usr/bin/chromium
[ -x "$CHROMIUM" ] && exit 0
need_package "[ -x $CHROMIUM ]" chromium "for the browser test"
say "$("$CHROMIUM" --version 2>/dev/null || echo installed)"
