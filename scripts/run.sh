#!/usr/bin/env bash
# run.sh (`make run`): the whole service on this machine, in the foreground.
#
#   1. Postgres and Redis on loopback (scripts/services.sh),
#   2. the binaries built into bin/,
#   3. a JWT secret and a monitor password, generated once into .run/env,
#   4. worker (WORKER_ID=local-1), scheduler and api started in the
#      background with logs in .run/*.log (api and worker apply migrations),
#   5. wait for GET /readyz, then print the URLs, the monitor login and a
#      ready-to-use token, and wait: Ctrl-C stops all three in order, the
#      worker first (scripts/lib.sh, stop_all).
#
# One stack at a time: a second `make run` or `make demo` says what runs.
#
# Any configuration variable from README.md may be set in the environment
# (e.g. HTTP_ADDR=:8081 make run); .run/env supplies only the secrets.
set -euo pipefail

START_NS=$(date +%s%N)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LIB_NAME=run
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
single_stack run

# --- 1. services ------------------------------------------------------------
scripts/services.sh

# --- 2. ports (before the slow build, to fail fast) ------------------------
api_ports run
base=$BASE
mport=$METRICS_PORT

# --- 3. build ---------------------------------------------------------------
build api worker scheduler

# --- 4. secrets -------------------------------------------------------------
load_secrets

# --- 5. start, 6. ready -----------------------------------------------------
stop_on_exit
start_service
elapsed_s=$(elapsed)

token=$(demo_token) ||
	token="(bin/api token failed: $(tr '\n' ' ' <"$RUN_DIR/token.err"))"
stack_info base="$base" page="$base/#token=$token"

wa_target="real WhatsApp (unreachable without internet; \`make demo\` uses the emulator)"
if [ -n "${WA_SERVER_ADDR:-}" ]; then
	wa_target="$WA_SERVER_ADDR"
fi

cat <<EOF

  wasessions is ready (${elapsed_s}s from start)

  API        $base
  Page       $base/#token=$token
  Monitor    $base/monitor   user: $MONITOR_USER   password: $MONITOR_PASSWORD
  Metrics    worker: http://127.0.0.1:$mport/metrics
  Token      user $DEMO_USER, valid 24h:
             $token

  Try it:
    TOKEN='$token'
    curl -s -X POST -H "Authorization: Bearer \$TOKEN" $base/api/integrations/whatsapp/session
    curl -s -H "Authorization: Bearer \$TOKEN" $base/api/integrations/sessions/stats

  WhatsApp   $wa_target
  Logs       $RUN_DIR/api.log  worker.log  scheduler.log
  Stop       Ctrl-C (stops the worker, which hands its sessions over, then the scheduler and the api)

EOF

# --- wait -------------------------------------------------------------------
# Until Ctrl-C, or until one of the three exits on its own.
wait_forever
