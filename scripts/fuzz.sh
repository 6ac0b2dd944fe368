#!/usr/bin/env bash
# fuzz.sh [FUZZTIME]: runs every Go fuzz target for FUZZTIME each (default
# 60s; `make fuzz`, `make fuzz FUZZTIME=10m`). `make test` runs each
# target's seed corpus, and every crash kept in testdata/fuzz/, as an
# ordinary test, then fuzzes each target here for a few seconds
# (scripts/test.sh): the request parsers live in internal/reqparse, which
# depends on the standard library only, so building them for fuzzing is
# quick (building internal/httpapi instrumented took minutes). A crash is
# written to the package's testdata/fuzz/<Target>/, where plain `go test`
# then replays it: commit it with the fix, and it stays a regular test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fuzztime=${1:-${FUZZTIME:-60s}}

# package target: the request-body parsers (session, message), the phone-number rule, the
# Authorization scheme, the bearer-token check, the webhook URL check.
targets=(
	"./internal/reqparse FuzzParseCreateSession"
	"./internal/reqparse FuzzParseSendMessage"
	"./internal/reqparse FuzzE164"
	"./internal/reqparse FuzzBearer"
	"./internal/auth FuzzVerifyHeader"
	"./internal/netguard FuzzCheckURL"
)
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "fuzz: $name ($pkg) for $fuzztime" >&2
	# -parallel 2: the machine is shared (2 cores in CI).
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -parallel 2 "$pkg"
done
