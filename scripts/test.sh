#!/usr/bin/env bash
# test.sh (`make test`, `make test-e2e`): Postgres and Redis on loopback
# (scripts/services.sh), then go vet and the tests.
#
# With no package named, two suites run one after the other, so that they
# never compete for the CPUs:
#   unit  every package but ./e2e/..., with the race detector;
#   e2e   ./e2e/... one package at a time: the end-to-end suite (e2e), which
#         builds api, worker, scheduler and waemu with -race and runs them as
#         processes, and the browser test (e2e/browser).
# TEST_SUITES=unit or TEST_SUITES=e2e runs one of them (`make test-e2e` is
# the latter).
#
# Extra arguments go to go test: flags, and packages (then exactly those
# run, with -race), e.g.
#   scripts/test.sh ./internal/queue -run TestEnqueue -v
#   make test ARGS='-run Replicas'
#   make test-e2e ARGS='-run TestCrashFailover -v'
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

suites=${TEST_SUITES:-unit e2e}

scripts/services.sh
# Debian's chromium for the browser test (e2e/browser); installed if absent.
case $suites in *e2e*) scripts/chromium.sh ;; esac

# Where the tests find their servers (internal/testenv); the defaults are
# what services.sh provides.
export TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
export TEST_REDIS_ADDR=${TEST_REDIS_ADDR:-127.0.0.1:6379}

echo "test: go vet ./..." >&2
go vet ./...

# The alert rules (deploy/prometheus): syntax, then their unit tests. A
# second or two; promtool comes from Debian's prometheus package.
case $suites in *unit*)
	scripts/promtool.sh
	echo "test: promtool check rules, promtool test rules (deploy/prometheus)" >&2
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts_test.yml
	;;
esac

has_pkg=0
for a in "$@"; do
	case $a in ./* | wasessions*) has_pkg=1 ;; esac
done
if [ $has_pkg = 1 ]; then
	echo "test: go test -race -count=1 -timeout 30m $*" >&2
	exec go test -race -count=1 -timeout 30m "$@"
fi

for suite in $suites; do
	case $suite in
	unit)
		mapfile -t pkgs < <(go list ./... | grep -Ev '^wasessions/e2e(/|$)')
		echo "test: unit: go test -race -count=1 -timeout 30m $* (every package but ./e2e/...)" >&2
		go test -race -count=1 -timeout 30m "$@" "${pkgs[@]}"
		# A few seconds of real fuzzing of what callers send: the token
		# check, the request parsers and the webhook URL check
		# (internal/reqparse and internal/netguard depend on the standard
		# library only, so their instrumented builds are quick). Every
		# target's seed corpus and kept crashes ran above as ordinary tests;
		# `make fuzz` fuzzes all targets for longer (scripts/fuzz.sh).
		echo "test: fuzz: FuzzVerifyHeader for 5s" >&2
		go test -run '^$' -fuzz '^FuzzVerifyHeader$' -fuzztime 5s -parallel 2 ./internal/auth
		for target in FuzzParseCreateSession FuzzParseSendMessage FuzzE164 FuzzBearer; do
			echo "test: fuzz: $target for 3s" >&2
			go test -run '^$' -fuzz "^${target}\$" -fuzztime 3s -parallel 2 ./internal/reqparse
		done
		echo "test: fuzz: FuzzCheckURL for 3s" >&2
		go test -run '^$' -fuzz '^FuzzCheckURL$' -fuzztime 3s -parallel 2 ./internal/netguard
		;;
	e2e)
		# The programs under test carry the race detector (built by the
		# suite); the harness does not need it. The timeout covers that
		# build too (about a minute on an idle 2-core machine, 7 minutes
		# on a loaded one) and the suite (7 minutes idle): 40 minutes
		# catches a hang without failing a slow machine.
		echo "test: e2e: go test -p 1 -count=1 -timeout 40m $* ./e2e/..." >&2
		go test -p 1 -count=1 -timeout 40m "$@" ./e2e/...
		;;
	*)
		echo "test: unknown suite '$suite' in TEST_SUITES (unit, e2e)" >&2
		exit 2
		;;
	esac
done
