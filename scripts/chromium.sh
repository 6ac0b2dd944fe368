#!/usr/bin/env bash
# chromium.sh: make sure Debian's Chromium is at /usr/bin/chromium, for the
# browser test (e2e/browser), which drives it headless with chromedp.
#
# Installs the `chromium` package with apt-get when the binary is missing
# (as root, or through sudo). Idempotent and quiet when it is already there.
# Test tools that download a browser of their own cannot work on a machine
# without internet; the distribution's package can.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

say() { echo "chromium: $*" >&2; }
die() {
	echo "chromium: ERROR: $*" >&2
	exit 1
}

if [ -x "$CHROMIUM" ]; then
	exit 0
fi

command -v apt-get >/dev/null 2>&1 ||
	die "$CHROMIUM is missing and apt-get is not available: install Chromium yourself (the browser test needs it)"

SUDO=()
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install chromium with apt-get"
	SUDO=(sudo)
fi

say "installing chromium with apt-get (for the browser test)"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null ||
	die "apt-get update failed"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null ||
	die "apt-get install chromium failed"
[ -x "$CHROMIUM" ] || die "apt-get installed chromium but $CHROMIUM is not there"
say "$("$CHROMIUM" --version 2>/dev/null || echo installed)"
