// Package testenv gives tests real, isolated infrastructure: a fresh Postgres
// database per test, a private Redis logical database per test, and private
// redis-server / postgres processes for tests that must stop and restart a
// store. Everything is torn down in t.Cleanup.
//
// Tests that need Postgres or Redis fail (never skip) when the server cannot
// be reached: a missing dependency is a broken test environment, not a reason
// to report success. `make test` (scripts/services.sh) starts both on
// loopback where they are not already answering.
//
// Addresses come from TEST_DATABASE_URL (an admin DSN, default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable) and
// TEST_REDIS_ADDR (default 127.0.0.1:6379).
package testenv
