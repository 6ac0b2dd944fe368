#!/usr/bin/env bash
# demo-webhook.sh: a signed webhook delivery in `make demo`. It registers an
# endpoint for the demo user at a local receiver (POST
# /api/integrations/webhooks; the demo runs with WEBHOOK_ALLOW_HTTP and
# WEBHOOK_ALLOW_PRIVATE so a loopback http:// URL is accepted), starts
# cmd/webhook-receiver with the secret the API returned (it verifies every
# request with the Standard Webhooks library and prints each event), and
# makes an event happen: it creates the demo user's session if there is
# none. Then scripts/demo-scan.sh, a disconnect, or messages from the
# emulator's peers show up as further events. Ctrl-C stops the receiver and
# deletes the endpoint.
#
# Reads $RUN_DIR/demo.env (RUN_DIR defaults to .run; scripts/demo.sh writes
# it); RECEIVER_ADDR (default 127.0.0.1:8099) is where the receiver listens.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUN_DIR=${RUN_DIR:-.run}
[ -f "$RUN_DIR/demo.env" ] || { echo "webhook: start \`make demo\` first (it writes $RUN_DIR/demo.env)" >&2; exit 1; }
# shellcheck disable=SC1091
. "$RUN_DIR/demo.env"
RECEIVER_ADDR=${RECEIVER_ADDR:-127.0.0.1:8099}
auth=(-H "Authorization: Bearer $DEMO_TOKEN")

BIN_DIR=${BIN_DIR:-bin}
go build -o "$BIN_DIR/" ./cmd/webhook-receiver
out=$(curl -s -m 30 "${auth[@]}" -H 'Content-Type: application/json' -X POST \
	-d "{\"url\":\"http://$RECEIVER_ADDR/hook\",\"events\":[\"session.status\",\"message.received\",\"message.status\"]}" \
	"$DEMO_API/api/integrations/webhooks")
id=$(printf '%s' "$out" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
secret=$(printf '%s' "$out" | sed -n 's/.*"secret":"\(whsec_[^"]*\)".*/\1/p')
[ -n "$id" ] && [ -n "$secret" ] || { echo "webhook: registration failed: $out" >&2; exit 1; }
echo "webhook: registered endpoint $id -> http://$RECEIVER_ADDR/hook" >&2
cleanup() {
	curl -s -m 10 "${auth[@]}" -X DELETE "$DEMO_API/api/integrations/webhooks/$id" >/dev/null || true
	[ -n "${rpid:-}" ] && kill "$rpid" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
WEBHOOK_SECRET=$secret "$BIN_DIR/webhook-receiver" -addr "$RECEIVER_ADDR" &
rpid=$!
sleep 0.5
# An event to see at once: a new session (pending, then its QR).
curl -s -m 30 "${auth[@]}" -X POST "$DEMO_API/api/integrations/whatsapp/session" >/dev/null
echo "webhook: now scripts/demo-scan.sh (another terminal) links it: more events follow; Ctrl-C stops" >&2
wait "$rpid"
