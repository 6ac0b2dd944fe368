#!/usr/bin/env bash
# run.sh (`make run`): the whole service on this machine, in the foreground.
#
#   1. Postgres and Redis on loopback (scripts/services.sh),
#   2. the binaries built into bin/,
#   3. a JWT secret and a monitor password, generated once into .run/env,
#   4. worker (WORKER_ID=local-1), scheduler and api started in the
#      background with logs in .run/*.log (api and worker apply migrations),
#   5. wait for GET /readyz, then print the URLs, the monitor login and a
#      ready-to-use token, and wait: Ctrl-C stops all three.
#
# Any configuration variable from README.md may be set in the environment
# (e.g. HTTP_ADDR=:8081 make run); .run/env supplies only the secrets.
set -euo pipefail

start_ns=$(date +%s%N)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
LIB_NAME=run
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# The demo user every printed token belongs to.
DEMO_USER=00000000-0000-4000-8000-000000000001
READY_WAIT=${READY_WAIT:-90}

# --- 1. services ------------------------------------------------------------
scripts/services.sh

# --- 2. ports (before the slow build, to fail fast) ------------------------
export HTTP_ADDR=${HTTP_ADDR:-:8080}
export MONITOR_USER=${MONITOR_USER:-admin}
export METRICS_ADDR=${METRICS_ADDR:-:9091}

port=${HTTP_ADDR##*:}
host=${HTTP_ADDR%:*}
case $host in '' | 0.0.0.0 | '[::]') host=127.0.0.1 ;; esac
base="http://$host:$port"

need_port "$port" "HTTP_ADDR=:8081 make run"
mport=${METRICS_ADDR##*:}
need_port "$mport" "METRICS_ADDR=:9191 make run (the worker's METRICS_ADDR)"

# --- 3. build ---------------------------------------------------------------
mkdir -p bin .run
say "building bin/api bin/worker bin/scheduler"
go build -o bin/ ./cmd/api ./cmd/worker ./cmd/scheduler ||
	die "go build failed"

# --- 4. secrets -------------------------------------------------------------
load_secrets

# --- 5. start ---------------------------------------------------------------
stop_on_exit
say "starting worker, scheduler and api (logs in .run/)"
start worker WORKER_ID="${WORKER_ID:-local-1}"
start scheduler
start api

# --- 6. ready ---------------------------------------------------------------
wait_ok "$base/readyz" "$READY_WAIT" api
elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))

token=$(bin/api token --user "$DEMO_USER" --ttl 24h 2>.run/token.err) ||
	token="(bin/api token failed: $(tr '\n' ' ' <.run/token.err))"

wa_target="real WhatsApp (unreachable without internet; \`make demo\` uses the emulator)"
if [ -n "${WA_SERVER_ADDR:-}" ]; then
	wa_target="$WA_SERVER_ADDR"
fi

cat <<EOF

  wasessions is ready ($(printf '%d.%03d' $((elapsed_ms / 1000)) $((elapsed_ms % 1000)))s from start)

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
  Logs       $root/.run/api.log  worker.log  scheduler.log
  Stop       Ctrl-C (stops api, worker and scheduler)

EOF

# --- wait -------------------------------------------------------------------
# Until Ctrl-C, or until one of the three exits on its own.
wait_forever
