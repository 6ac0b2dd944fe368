#!/usr/bin/env bash
# test.sh (`make test`): Postgres and Redis on loopback (scripts/services.sh),
# then go vet and the whole test suite with the race detector.
#
# Extra arguments go to go test: flags, and packages (./... when none is
# named), e.g.
#   scripts/test.sh ./internal/queue -run TestEnqueue -v
#   make test ARGS='-run Replicas'
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/services.sh
# Debian's chromium for the browser test (e2e/browser); installed if absent.
scripts/chromium.sh

# Where the tests find their servers (internal/testenv); the defaults are
# what services.sh provides.
export TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
export TEST_REDIS_ADDR=${TEST_REDIS_ADDR:-127.0.0.1:6379}

echo "test: go vet ./..." >&2
go vet ./...

has_pkg=0
for a in "$@"; do
	case $a in ./* | wasessions*) has_pkg=1 ;; esac
done
if [ $has_pkg = 0 ]; then
	set -- "$@" ./...
fi
echo "test: go test -race -count=1 -timeout 30m $*" >&2
go test -race -count=1 -timeout 30m "$@"
