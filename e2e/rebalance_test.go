package e2e

import (
	"fmt"
	"testing"
	"time"

	"wasessions/e2e/harness"
)

// Rebalancing after a rolling deploy: sessions never move back on their
// own, so a worker that (re)joins would stay empty while another hosts
// everything. The reconciler asks the loaded worker to hand sessions over
// until the two hold their fair share, each move a sub-second reconnect
// from the stored keys: no new pairing, never two clients.
func TestRebalanceEvensOutWorkers(t *testing.T) {
	s := newStack(t, stackOpts{Workers: []string{"w1", "w2"}})
	const n = 10
	s.Workers["w2"].Stop(45 * time.Second) // w2 is being deployed
	ids := sessionIDs(s.linkMany(n, 5))
	s.waitAllConnected(ids, harness.WaitLong)
	if per, _ := s.ConnectedPerWorker(ids, nil); per["w1"] != n {
		t.Fatalf("with w2 down, sessions per worker %v; want all %d on w1", per, n)
	}

	start := time.Now()
	s.StartWorker("w2") // w2 is back
	s.WaitFor("both workers hosting their fair share", harness.WaitLong, func() (bool, string) {
		per, err := s.ConnectedPerWorker(ids, nil)
		return err == nil && per["w1"] == n/2 && per["w2"] == n/2, fmt.Sprintf("%v %v", per, err)
	})
	t.Logf("FIGURE rebalance (%d sessions, w2 rejoined -> %d/%d): %s", n, n/2, n/2, time.Since(start).Round(time.Millisecond))
	s.waitAllConnected(ids, harness.WaitLong)
	s.checkHostedOnce(n)
	s.checkNoRepairing(n)
}
