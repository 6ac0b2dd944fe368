# wasessions: the two commands are `make run` and `make test` (see README.md).
# Nothing here needs Docker.

GO      ?= go
BINS    := api worker scheduler waemu
ARGS    ?=

.DEFAULT_GOAL := help
.PHONY: help run demo test test-e2e test-messages bench-messages test-failover test-webhooks test-outages scale soak build lint bench fuzz clean

help: ## Show this help.
	@echo "wasessions — make targets:"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-zA-Z0-9_-]*:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: ## Start Postgres/Redis if needed, then api, worker and scheduler in the foreground; prints URLs and a token.
	@scripts/run.sh

test: ## go vet, the unit tests (-race), then the end-to-end suite (./e2e/...); ARGS='-run X ./pkg' narrows it.
	@scripts/test.sh $(ARGS)

test-e2e: ## Only the end-to-end suite: the real programs as processes against the WhatsApp emulator.
	@TEST_SUITES=e2e scripts/test.sh $(ARGS)

test-messages: ## The message crash test at the issue's scale: 500 out and 500 in across SIGKILL/SIGTERM (E2E_MESSAGES).
	@E2E_MESSAGES=$${E2E_MESSAGES:-500} TEST_SUITES=e2e scripts/test.sh -run TestMessagesExactlyOnceAcrossCrashes -v

bench-messages: ## The message figures of docs/BENCHMARKS.md without -race: POST p50/p99, accepted->sent, one worker's send throughput, commit->receipt (E2E_MESSAGES, default 500).
	@E2E_RACE=0 E2E_MESSAGES=$${E2E_MESSAGES:-500} TEST_SUITES=e2e scripts/test.sh -run 'TestMessagesThroughput$$' -v -timeout 60m

test-failover: ## The store failover tests: Redis Sentinel and a promoted Postgres standby (also part of `make test`).
	@scripts/test.sh ./internal/redisconn ./internal/testenv -run 'Sentinel|Standby' -v
	@TEST_SUITES=e2e scripts/test.sh ./e2e -run 'TestRedisSentinelFailover|TestPostgresFailover' -v

test-webhooks: ## Webhooks at the issue's scale: receiver down 60 s while 1,000 events happen across 20 sessions; then the SIGKILL e2e test.
	@WEBHOOK_TEST_OUTAGE=$${WEBHOOK_TEST_OUTAGE:-60s} WEBHOOK_TEST_EVENTS=$${WEBHOOK_TEST_EVENTS:-1000} scripts/test.sh ./internal/webhook -run TestOutageLosesNothing -v
	@TEST_SUITES=e2e scripts/test.sh ./e2e -run TestWebhooksSurviveKills -v

test-outages: ## Issue 9's longer store outages under Toxiproxy (Postgres 20 s, 60 s refused, 60 s hanging; Redis 20 s, 60 s refused and hanging); not in make test.
	@scripts/services.sh && $(GO) test -race -count=1 -tags outages -run 'TestPostgresOutagesLong|TestRedisOutagesLong' -v -timeout 30m ./internal/worker/

scale: ## The scale harness: N sessions (default 100) on WORKERS workers (1) via the API and the emulator, then FAULT (kill|restart|none); prints FIGURE lines. Heavy.
	@scripts/services.sh
	E2E_RACE=$${E2E_RACE:-0} $(GO) test -tags scale -count=1 -timeout 90m -run '^TestScale$$' -v ./e2e \
		-scale.n=$(or $(N),100) -scale.workers=$(or $(WORKERS),1) -scale.fault=$(or $(FAULT),kill) $(ARGS)

soak: ## Issue 9's soak: SOAK_DURATION (30m) of random faults against SOAK_SESSIONS (200) on SOAK_WORKERS (3), invariants checked every few seconds; SOAK_SEED replays. Heavy; not in make test.
	@scripts/services.sh
	E2E_RACE=$${E2E_RACE:-0} $(GO) test -tags soak -count=1 -timeout $${SOAK_TIMEOUT:-90m} -run '^TestSoak$$' -v ./e2e $(ARGS)

build: ## Build bin/api, bin/worker, bin/scheduler and bin/waemu.
	@mkdir -p bin
	$(GO) build -o bin/ $(addprefix ./cmd/,$(BINS))

lint: ## gofmt -l (must list nothing) and go vet.
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

bench: ## Go benchmarks of every package (see docs/BENCHMARKS.md for the load benchmark).
	@scripts/services.sh
	$(GO) test -run '^$$' -bench . -benchmem $(or $(ARGS),./...)

fuzz: ## The Go fuzz targets (body parsers, phone numbers, bearer tokens, webhook URLs), FUZZTIME each (default 60s).
	@scripts/fuzz.sh $(FUZZTIME)

demo: ## The whole stack against the WhatsApp emulator (no internet): link a session in a minute.
	@scripts/demo.sh

clean: ## Remove bin/, the logs in .run/ and the test cache (keeps the secrets in .run/env).
	rm -rf bin
	rm -f .run/*.log .run/*.err
	$(GO) clean -testcache
