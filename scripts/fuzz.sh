#!/usr/bin/env bash
# fuzz.sh [FUZZTIME]: runs every Go fuzz target for FUZZTIME each (default
# 60s; `make fuzz`, `make fuzz FUZZTIME=10m`). `make test` runs each
# target's seed corpus, and every crash kept in testdata/fuzz/, as an
# ordinary test, and fuzzes FuzzVerifyHeader for 5 s; it does not fuzz the
# internal/httpapi targets, because building a package for fuzzing
# instruments its whole dependency tree (for internal/httpapi, minutes on
# a busy 2-core machine). A crash is written to the package's
# testdata/fuzz/<Target>/, where plain `go test` then replays it: commit
# it with the fix, and it stays a regular test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fuzztime=${1:-${FUZZTIME:-60s}}

# package target: the request-body parser, the phone-number rule, the
# bearer-token check.
targets=(
	"./internal/httpapi FuzzParseCreateBody"
	"./internal/httpapi FuzzPhoneNumber"
	"./internal/auth FuzzVerifyHeader"
)
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "fuzz: $name ($pkg) for $fuzztime" >&2
	# -parallel 2: the machine is shared (2 cores in CI).
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -parallel 2 "$pkg"
done
