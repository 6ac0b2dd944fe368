// Package harness runs the real programs for the end-to-end suites (e2e and
// e2e/browser): it builds cmd/api, cmd/worker, cmd/scheduler and cmd/waemu
// once per test binary, starts them as OS processes on a database and a
// Redis database of their own, and stops them when the test ends.
//
// Both suites share it so that both get the same promises on the way out of
// every test (Stack's teardown): the emulator counted no conflict (two live
// connections for one device), no program reported a data race, none exited
// without being asked to, and each stopped cleanly on SIGTERM. A test that
// breaks one of them fails, whichever suite it is in.
//
// It is an ordinary package, not a test file, only so that two test
// packages can import it; nothing outside e2e uses it.
package harness
