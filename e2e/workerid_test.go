package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"wasessions/internal/testenv"
)

// A second worker process started with the WORKER_ID of a running worker
// refuses to start, naming the id, and takes none of its sessions: the
// first keeps them, connected, under the same lease (issue 9, suspicion c).
// Before, the second process took every session of that id back as its
// own (a restart's restore) and the two processes replaced each other's
// connections.
func TestDuplicateWorkerIDRefused(t *testing.T) {
	s := newStack(t, stackOpts{})
	l := s.link(newUser(), phoneOf(1), "Dup")
	before := s.row(l.sessionID)
	logins := s.emuStats().Logins

	first := s.workers["w1"]
	env := slices.Clone(first.env)
	dup := newProc(t, s.dir, "worker-w1-second", binPath("worker"), nil, env)
	dup.setenv("METRICS_ADDR", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)))
	err := dup.runToExit(waitLong)
	if err == nil {
		t.Fatalf("the second worker w1 exited cleanly; want a refusal:\n%s", dup.tail(20))
	}
	if !dup.logContains("another running worker uses this WORKER_ID") {
		t.Fatalf("the second worker w1 exited (%v) without saying why:\n%s", err, dup.tail(20))
	}
	if !first.running() {
		t.Fatal("the first worker w1 is gone")
	}
	time.Sleep(leaseTTL) // a heartbeat of w1's runs: its lease is still its own
	after := s.row(l.sessionID)
	if after.Status != "connected" || str(after.WorkerID) != "w1" || after.LeaseEpoch != before.LeaseEpoch {
		t.Fatalf("session after the second start: status=%s worker=%s epoch=%d, want connected on w1 at epoch %d",
			after.Status, str(after.WorkerID), after.LeaseEpoch, before.LeaseEpoch)
	}
	if st := s.emuStats(); st.Conflicts != 0 || st.Logins != logins {
		t.Fatalf("emulator %+v: want no login since the first worker's (%d) and no conflict", st, logins)
	}
}
