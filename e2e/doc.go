// Package e2e proves the product's promise end to end: a user scans a QR
// code once, and the link survives every restart and crash on the server
// side, with never two live clients for one device.
//
// The tests start the real programs as separate OS processes — cmd/waemu
// (the WhatsApp protocol emulator, standing in for WhatsApp and for the
// user's phone), cmd/api, one or more cmd/worker and cmd/scheduler — built
// once per test run (with -race unless E2E_RACE=0). They talk to the API
// over HTTP as a frontend would and act as the phone through the emulator's
// control API. Postgres and Redis are the ones `make test` provides (a fresh
// database and Redis logical database per test), or private servers for the
// tests that stop and restart a store.
//
// The stack itself (building, starting and stopping the programs, the
// emulator's control API, the checks every test ends with) is e2e/harness,
// which the browser test (e2e/browser) shares.
//
// Every process logs JSON lines to a file under the test's directory; when
// a test fails the end of each log is printed. Set E2E_KEEP_LOGS=1 to keep
// the files. Every test ends by checking that the emulator saw no conflict
// (two live connections for one device) and that no program reported a
// data race.
//
// Run it with `make test-e2e` (or `go test -count=1 ./e2e`); `make test`
// runs it after the unit packages. The figures in docs/BENCHMARKS.md come
// from the lines these tests log with the prefix "FIGURE".
package e2e
