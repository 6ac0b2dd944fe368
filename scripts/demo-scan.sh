#!/usr/bin/env bash
# demo-scan.sh: the phone of `make demo`. It reads the QR code the demo
# user's session shows (GET /api/integrations/whatsapp/qr, creating the
# session first if there is none), "scans" it with the WhatsApp emulator's
# phone (POST /phone/scan on its control API), and waits until the API says
# connected. By hand, that is:
#
#   curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/api/integrations/whatsapp/qr
#   curl -s -X POST -d '{"qr":"<qrRaw from above>","phone":"+15550001234","name":"Demo Phone"}' \
#        http://127.0.0.1:5281/phone/scan
#
# It reads the API URL, the emulator's control URL and the token from
# $RUN_DIR/demo.env (RUN_DIR defaults to .run; written by scripts/demo.sh);
# TOKEN, PHONE and NAME in the
# environment override them. Needs only bash (curl is used when present).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUN_DIR=${RUN_DIR:-.run}
if [ -f "$RUN_DIR/demo.env" ]; then
	# shellcheck disable=SC1091
	. "$RUN_DIR/demo.env"
fi
API=${DEMO_API:-http://127.0.0.1:8080}
CONTROL=${DEMO_CONTROL:-http://127.0.0.1:5281}
TOKEN=${TOKEN:-${DEMO_TOKEN:-}}
PHONE=${PHONE:-+15550001234}
NAME=${NAME:-Demo Phone}

say() { echo "scan: $*" >&2; }
die() {
	echo "scan: ERROR: $*" >&2
	exit 1
}
[ -n "$TOKEN" ] || die "no token: start \`make demo\` first (it writes .run/demo.env), or set TOKEN"

# request METHOD URL [BODY] [TOKEN]: sets CODE (HTTP status, 000 when
# nothing answers) and BODY.
request() {
	local method=$1 url=$2 data=${3:-} auth=${4:-} out
	if command -v curl >/dev/null 2>&1; then
		local args=(-s -m 30 -X "$method" -w '\n%{http_code}')
		[ -n "$auth" ] && args+=(-H "Authorization: Bearer $auth")
		[ -n "$data" ] && args+=(-H 'Content-Type: application/json' --data "$data")
		out=$(curl "${args[@]}" "$url") || out=$'\n000'
		CODE=${out##*$'\n'}
		BODY=${out%$'\n'*}
		return
	fi
	# Plain bash: HTTP/1.0 over /dev/tcp (the server closes when done).
	local rest=${url#http://} hostport path
	hostport=${rest%%/*}
	path=/${rest#*/}
	out=$(
		exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}" || exit 0
		{
			printf '%s %s HTTP/1.0\r\nHost: %s\r\n' "$method" "$path" "$hostport"
			[ -n "$auth" ] && printf 'Authorization: Bearer %s\r\n' "$auth"
			[ -n "$data" ] && printf 'Content-Type: application/json\r\nContent-Length: %d\r\n' "${#data}"
			printf '\r\n%s' "$data"
		} >&3
		while IFS= read -r line <&3 || [ -n "$line" ]; do printf '%s\n' "$line"; done
	) 2>/dev/null || true
	if [ -z "$out" ]; then
		CODE=000
		BODY=
		return
	fi
	CODE=$(printf '%s\n' "$out" | head -n 1 | cut -d ' ' -f 2)
	BODY=$(printf '%s\n' "$out" | sed '1,/^\r\{0,1\}$/d')
}

# field NAME: the string value of "NAME" in BODY (the values read here hold
# no quotes or escapes).
field() { printf '%s' "$BODY" | sed -n 's/.*"'"$1"'":"\([^"]*\)".*/\1/p' | head -n 1; }

# 1. The QR string the session shows now.
qr=
created=0
for ((i = 0; i < 80; i++)); do
	request GET "$API/api/integrations/whatsapp/qr" "" "$TOKEN"
	case "$CODE:$(field code)" in
	200:*)
		qr=$(field qrRaw)
		break
		;;
	404:session_not_found | 410:session_ended)
		[ $created = 1 ] && die "the new session ended before showing a QR: $BODY"
		say "no live session: creating one (POST /api/integrations/whatsapp/session)"
		request POST "$API/api/integrations/whatsapp/session" "" "$TOKEN"
		case $CODE in 200 | 201) created=1 ;; *) die "create: $CODE $BODY" ;; esac
		;;
	409:already_linked)
		say "the session is already linked; its status:"
		request GET "$API/api/integrations/whatsapp/status" "" "$TOKEN"
		printf '%s\n' "$BODY"
		exit 0
		;;
	409:qr_not_ready | 503:*) ;;
	000:*) die "the API does not answer at $API; is \`make demo\` running?" ;;
	*) die "GET /qr: $CODE $BODY" ;;
	esac
	sleep 0.25
done
[ -n "$qr" ] || die "no QR code within 20s: $CODE $BODY"
say "the session shows QR ${qr:0:24}…"

# 2. The phone scans it.
request POST "$CONTROL/phone/scan" "{\"qr\":\"$qr\",\"phone\":\"$PHONE\",\"name\":\"$NAME\"}"
[ "$CODE" = 200 ] || die "the emulator refused the scan: $CODE $BODY"
say "scanned by $PHONE ($NAME): device $(field jid)"

# 3. Connected.
for ((i = 0; i < 120; i++)); do
	request GET "$API/api/integrations/whatsapp/status" "" "$TOKEN"
	if [ "$CODE" = 200 ] && [ "$(field status)" = connected ]; then
		say "connected; GET /api/integrations/whatsapp/status:"
		printf '%s\n' "$BODY"
		exit 0
	fi
	sleep 0.25
done
die "not connected within 30s; last status: $CODE $BODY"
