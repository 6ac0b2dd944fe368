#!/usr/bin/env bash
# demo.sh (`make demo`): the whole service on this machine against the
# WhatsApp protocol emulator (cmd/waemu), with no internet, in the
# foreground:
#
#   1. Postgres and Redis on loopback (scripts/services.sh),
#   2. bin/api, bin/worker, bin/scheduler and bin/waemu built,
#   3. the secrets of `make run` (.run/env),
#   4. waemu started with a fixed development key seed and its state in
#      .run/waemu-state.json (so linked devices survive a demo restart, as
#      their keys do in Postgres), then worker, scheduler and api pointed at
#      it (WA_SERVER_ADDR, WA_SERVER_PUBKEY),
#   5. wait for GET /readyz, then print how to create a session, how to
#      "scan" its QR code with the emulated phone (scripts/demo-scan.sh),
#      how to send a message to an emulated contact and make it reply, and
#      wait: Ctrl-C stops everything in order, the worker first, the
#      emulator last (scripts/lib.sh, stop_all).
#
# One stack at a time: a second `make demo` or `make run` says what runs.
#
# Ports: the API on HTTP_ADDR (:8080), the worker's metrics on METRICS_ADDR
# (:9091), the emulator on WAEMU_LISTEN (127.0.0.1:5280) with its control
# API on WAEMU_CONTROL (127.0.0.1:5281). The database is wasessions_demo
# (DB_NAME) and Redis DB 15 (REDIS_URL), apart from `make run`'s. Any configuration variable from
# README.md may be set in the environment.
set -euo pipefail

START_NS=$(date +%s%N)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LIB_NAME=demo
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
single_stack demo

# A fixed, public development seed: the emulator's root key, which the
# worker trusts, stays the same across demo runs. Never a real key.
DEMO_KEY_SEED=7761736573736f6e732d64656d6f2d6b65792d736565642d6e6f742d736563
WAEMU_LISTEN=${WAEMU_LISTEN:-127.0.0.1:5280}
WAEMU_CONTROL=${WAEMU_CONTROL:-127.0.0.1:5281}

# Its own database, so that `make run` (real WhatsApp) never tries to
# restore the demo's emulated devices, nor the demo `make run`'s. And its
# own Redis database for the same reason: the two share queue names, and a
# `make run` worker would otherwise take the demo's restore tasks (and skip
# them, the session not being in its database). Redis DB 15 is kept out of
# the test suite's range (internal/testenv uses 1..14).
export DB_NAME=${DB_NAME:-wasessions_demo}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/15}
# Webhooks to a receiver on this machine (scripts/demo-webhook.sh): plain
# http and loopback addresses, which the service refuses by default.
export WEBHOOK_ALLOW_HTTP=${WEBHOOK_ALLOW_HTTP:-true} WEBHOOK_ALLOW_PRIVATE=${WEBHOOK_ALLOW_PRIVATE:-true}

# --- 1. services ------------------------------------------------------------
scripts/services.sh

# --- 2. ports (before the slow build, to fail fast) ------------------------
api_ports demo
base=$BASE
control="http://$WAEMU_CONTROL"
need_port "${WAEMU_LISTEN##*:}" "WAEMU_LISTEN=127.0.0.1:5380 make demo (the emulator)"
need_port "${WAEMU_CONTROL##*:}" "WAEMU_CONTROL=127.0.0.1:5381 make demo (the emulator's control API)"

# --- 3. build ---------------------------------------------------------------
build api worker scheduler waemu

# --- 4. secrets -------------------------------------------------------------
load_secrets

# --- 5. start ---------------------------------------------------------------
stop_on_exit
say "starting the WhatsApp emulator on $WAEMU_LISTEN (control API $control)"
start waemu -- -listen "$WAEMU_LISTEN" -control "$WAEMU_CONTROL" -key-seed "$DEMO_KEY_SEED" \
	-state "$RUN_DIR/waemu-state.json"
wait_ok "$control/pubkey" 30 waemu
# Its first stdout line names the root key the worker must trust.
pubkey=$(sed -n 's/.*"pubkey":"\([0-9a-f]\{64\}\)".*/\1/p' "$RUN_DIR/waemu.log" | head -n 1)
[ -n "$pubkey" ] || die "no root key in the emulator's ready line; see $RUN_DIR/waemu.log"
export WA_SERVER_ADDR=$WAEMU_LISTEN WA_SERVER_PUBKEY=$pubkey
# The worker reads the client version from the emulator, never from the
# internet.
export WA_VERSION_URL=$control/web

start_service

# --- 6. ready ---------------------------------------------------------------
elapsed_s=$(elapsed)
token=$(demo_token) ||
	die "bin/api token failed: $(tr '\n' ' ' <"$RUN_DIR/token.err")"
stack_info base="$base" page="$base/#token=$token"
# What scripts/demo-scan.sh reads.
umask 077
printf 'DEMO_API=%s\nDEMO_CONTROL=%s\nDEMO_TOKEN=%s\n' "$base" "$control" "$token" >"$RUN_DIR/demo.env"
umask 022

# A session linked in an earlier run comes back by itself (the worker
# restores it from the keys in Postgres): say so, rather than asking for a
# scan. It may still be reconnecting for a moment after the api is ready.
linked_note=""
if command -v curl >/dev/null 2>&1; then
	for ((i = 0; i < 60; i++)); do
		st=$(curl -s -m 2 -H "Authorization: Bearer $token" "$base/api/integrations/whatsapp/status" || true)
		case $st in
		*'"status":"connected"'*)
			phone=$(printf '%s' "$st" | sed -n 's/.*"phoneNumber":"\([^"]*\)".*/\1/p')
			linked_note="
  Your session from the last run is back, linked as ${phone:-your phone} without a scan:
  steps 1 and 2 are done; try 3 and 4.
"
			break
			;;
		*'"status":"reconnecting"'* | *'"status":"pending"'*) sleep 0.25 ;; # coming back
		*) break ;; # none, waiting for a scan, or ended
		esac
	done
fi

cat <<EOF

  wasessions demo is ready (${elapsed_s}s from start)
  WhatsApp is the emulator (cmd/waemu) on $WAEMU_LISTEN; the emulated phone is its control API.
$linked_note
  1. Create a session (what a frontend's "Connect WhatsApp" does):
       TOKEN='$token'
       curl -s -X POST -H "Authorization: Bearer \$TOKEN" $base/api/integrations/whatsapp/session
     or open the page:
       $base/#token=$token

  2. Scan its QR code with the emulated phone:
       scripts/demo-scan.sh
     (it reads the QR string from GET /api/integrations/whatsapp/qr and posts it to the
     emulator's POST $control/phone/scan; it creates the session first if there is none)

  3. See it linked:
       curl -s -H "Authorization: Bearer \$TOKEN" $base/api/integrations/whatsapp/status

  4. Send a message. Give the emulated WhatsApp a contact first (Alice's phone, once):
       curl -s -X POST -d '{"phone":"+15557654321","name":"Alice"}' $control/peers
     send her a text through the linked session, and see it on her phone:
       curl -s -X POST -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
         -d '{"to":"+15557654321","text":"Hello Alice"}' $base/api/integrations/whatsapp/messages
       curl -s $control/peers/+15557654321/inbox

  5. Make Alice reply (to the number that scanned: +15550001234 unless PHONE was set),
     then see the reply, and your message's status (delivered):
       curl -s -X POST -d '{"to":"+15550001234","text":"Hi! Got it."}' $control/peers/+15557654321/send
       curl -s -H "Authorization: Bearer \$TOKEN" "$base/api/integrations/whatsapp/messages?direction=in"
       curl -s -H "Authorization: Bearer \$TOKEN" "$base/api/integrations/whatsapp/messages?direction=out"
     or watch it all live (message.status, message.received) in another terminal:
       curl -sN -H "Authorization: Bearer \$TOKEN" $base/api/integrations/whatsapp/events

  6. Receive its events as signed webhooks (Standard Webhooks, verified by a local receiver):
       scripts/demo-webhook.sh

  Then try: Ctrl-C and \`make demo\` again (the session comes back without a scan),
  curl -s -X POST $control/devices/<jid>/unlink (the phone unlinks it), or
  curl -s -X POST -H "Authorization: Bearer \$TOKEN" $base/api/integrations/whatsapp/disconnect

  Emulator   $control/devices   $control/stats
  Monitor    $base/monitor   user: $MONITOR_USER   password: $MONITOR_PASSWORD
  Logs       $RUN_DIR/waemu.log  api.log  worker.log  scheduler.log
  Stop       Ctrl-C (stops the worker, which hands its sessions over, then the scheduler,
             the api and the emulator)

EOF

# --- wait -------------------------------------------------------------------
wait_forever
