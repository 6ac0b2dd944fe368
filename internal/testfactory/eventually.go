package testfactory

import (
	"testing"
	"time"
)

// EventuallyWithin is how long Eventually waits: generous, because the
// suite shares two cores with other suites; tests never assert on speed.
const EventuallyWithin = time.Minute

// Eventually polls cond until it holds, failing the test with what when it
// has not held within EventuallyWithin.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(EventuallyWithin)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", EventuallyWithin, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
