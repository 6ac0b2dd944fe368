package testfactory

import (
	"testing"
	"time"

	"wasessions/internal/testenv"
)

// EventuallyWithin is how long Eventually waits: generous, because the
// suite shares two cores with other suites; tests never assert on speed.
const EventuallyWithin = time.Minute

// PollEvery is how often Eventually and WaitFor ask again.
const PollEvery = 20 * time.Millisecond

// Eventually polls cond until it holds, failing the test with what when it
// has not held within EventuallyWithin.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	WaitFor(t, what, EventuallyWithin, func() (bool, string) { return cond(), "" })
}

// EventuallyIn is Eventually with its own bound, for waits a test sizes
// itself (a failover's, a long run's).
func EventuallyIn(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	WaitFor(t, what, within, func() (bool, string) { return cond(), "" })
}

// WaitFor polls cond until it holds; after within the test fails, naming
// what it waited for and cond's description of what it saw last.
func WaitFor(t testing.TB, what string, within time.Duration, cond func() (ok bool, last string)) {
	t.Helper()
	if err := Poll(within, PollEvery, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// Poll is WaitFor without the test, asking every every: for goroutines
// other than the test's, and for callers that report a timeout their own
// way (testenv.Poll, the one polling loop).
func Poll(within, every time.Duration, cond func() (ok bool, last string)) error {
	return testenv.Poll(within, every, cond)
}
