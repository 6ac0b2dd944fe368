#!/usr/bin/env bash
# services.sh: make sure Postgres and Redis answer on loopback, for `make run`
# and `make test`.
#
# Where a server already answers (127.0.0.1:5432 with trust auth for user
# postgres, 127.0.0.1:6379) it is used as it is. A cluster it starts trusts
# only the postgres role, only on loopback (pg_trust_loopback). Where one does not, this
# installs it with apt-get if its binaries are missing and starts it without
# systemd. It also makes sure the Postgres server binaries (initdb) and
# redis-server exist even when the shared servers answer, because some tests
# start private instances of both. Finally it creates the `wasessions`
# database (or $DB_NAME) if missing.
#
# Idempotent and quiet when all is well. Overrides (mainly for testing this
# script on spare ports): WASESSIONS_PG_PORT, WASESSIONS_PG_CLUSTER,
# WASESSIONS_REDIS_PORT, WASESSIONS_REDIS_DIR, DB_NAME.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=${WASESSIONS_PG_PORT:-5432}
PG_CLUSTER=${WASESSIONS_PG_CLUSTER:-main}
REDIS_HOST=127.0.0.1
REDIS_PORT=${WASESSIONS_REDIS_PORT:-6379}
DB=${DB_NAME:-wasessions}
WAIT_SECONDS=60

say() { echo "services: $*" >&2; }
die() {
	echo "services: ERROR: $*" >&2
	exit 1
}

SUDO=()
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO=(sudo)
	fi
fi
as_root() {
	if [ "$(id -u)" != 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
		die "need root (or sudo) to run: $*"
	fi
	"${SUDO[@]}" "$@"
}

apt_updated=0
apt_install() {
	command -v apt-get >/dev/null 2>&1 ||
		die "apt-get not found: install $* yourself (Postgres on 127.0.0.1:5432 with trust auth, Redis on 127.0.0.1:6379)"
	export DEBIAN_FRONTEND=noninteractive
	if [ $apt_updated = 0 ]; then
		say "apt-get update"
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || die "apt-get update failed"
		apt_updated=1
	fi
	say "installing $* with apt-get"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
		die "apt-get install $* failed"
}

# tcp_open HOST PORT: does something accept TCP connections there?
tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

pg_answers() {
	if command -v pg_isready >/dev/null 2>&1; then
		pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2
	else
		tcp_open "$PG_HOST" "$PG_PORT"
	fi
}

redis_answers() {
	if command -v redis-cli >/dev/null 2>&1; then
		[ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
	else
		tcp_open "$REDIS_HOST" "$REDIS_PORT"
	fi
}

# wait_for CHECK: poll CHECK for up to WAIT_SECONDS.
wait_for() {
	local check=$1 i
	for ((i = 0; i < WAIT_SECONDS * 4; i++)); do
		if "$check"; then
			return 0
		fi
		sleep 0.25
	done
	return 1
}

pg_server_binaries() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }

# --- binaries ---------------------------------------------------------------
missing=()
if ! pg_server_binaries || ! command -v psql >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null 2>&1; then
	missing+=(postgresql postgresql-client)
fi
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
	missing+=(redis-server redis-tools)
fi
if [ ${#missing[@]} -gt 0 ]; then
	apt_install "${missing[@]}"
fi

# --- Postgres ---------------------------------------------------------------
pg_version() {
	# The newest installed server version, e.g. 15.
	local d
	for d in /usr/lib/postgresql/*/bin/initdb; do
		d=${d#/usr/lib/postgresql/}
		echo "${d%%/*}"
	done | sort -V | tail -n 1
}

pg_trust_loopback() {
	# Trust auth for the postgres role over loopback TCP only, as the tests
	# and `make run` connect as postgres without a password; every other
	# role and address keeps the cluster's own rules (a password). Only
	# applied to a cluster this script starts, never to one that already
	# runs. Earlier versions of this script trusted every role on loopback:
	# those lines are narrowed here.
	local hba=$1
	as_root sed -i -E '/^host[[:space:]]+all[[:space:]]+all[[:space:]]+(127\.0\.0\.1\/32|::1\/128)[[:space:]]+trust[[:space:]]*$/d' "$hba"
	if ! grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+postgres[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
		say "setting trust auth for role postgres on 127.0.0.1 and ::1 in $hba"
		as_root sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
	fi
}

start_postgres() {
	local ver conf
	ver=$(pg_version)
	[ -n "$ver" ] || die "no Postgres server version under /usr/lib/postgresql"
	conf=/etc/postgresql/$ver/$PG_CLUSTER
	if [ ! -d "$conf" ]; then
		say "creating Postgres $ver cluster '$PG_CLUSTER' on port $PG_PORT"
		as_root pg_createcluster "$ver" "$PG_CLUSTER" -p "$PG_PORT" >/dev/null ||
			die "pg_createcluster $ver $PG_CLUSTER failed"
	fi
	pg_trust_loopback "$conf/pg_hba.conf"
	say "starting Postgres $ver/$PG_CLUSTER"
	as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$PG_CLUSTER" start ||
		# "already running" (on another port?) is reported by the wait below.
		true
}

if ! pg_answers; then
	start_postgres
	wait_for pg_answers ||
		die "Postgres does not answer on $PG_HOST:$PG_PORT after ${WAIT_SECONDS}s; see /var/log/postgresql/ (pg_lsclusters shows its port)"
fi

# --- Redis ------------------------------------------------------------------
start_redis() {
	local dir=${WASESSIONS_REDIS_DIR:-}
	if [ -z "$dir" ]; then
		if [ -d /var/lib/redis ] && [ -w /var/lib/redis ]; then
			dir=/var/lib/redis
		else
			dir=${XDG_STATE_HOME:-$HOME/.local/state}/wasessions/redis
		fi
	fi
	mkdir -p "$dir"
	say "starting redis-server on $REDIS_HOST:$REDIS_PORT (data in $dir)"
	# noeviction and AOF, as asynq needs: evicted or lost keys are lost tasks.
	redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" \
		--dir "$dir" --logfile "$dir/redis-$REDIS_PORT.log" --pidfile "$dir/redis-$REDIS_PORT.pid" \
		--maxmemory-policy noeviction --appendonly yes --appendfilename "appendonly-$REDIS_PORT.aof" \
		--save "" >/dev/null ||
		die "redis-server failed to start; see $dir/redis-$REDIS_PORT.log"
}

if ! redis_answers; then
	start_redis
	wait_for redis_answers ||
		die "Redis does not answer on $REDIS_HOST:$REDIS_PORT after ${WAIT_SECONDS}s"
fi

# --- database ---------------------------------------------------------------
psql_admin() {
	psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres "$@"
}
if ! exists=$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'" 2>&1 </dev/null); then
	die "cannot connect to Postgres at $PG_HOST:$PG_PORT as user postgres without a password: $exists
  (the services need trust auth for 127.0.0.1, or set PGPASSWORD)"
fi
if [ "$exists" != 1 ]; then
	out=$(psql_admin -c "CREATE DATABASE \"$DB\"" 2>&1 </dev/null) || case $out in
	*"already exists"*) ;;
	*) die "CREATE DATABASE $DB failed: $out" ;;
	esac
	say "created database $DB"
fi
