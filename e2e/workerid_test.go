package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"wasessions/e2e/harness"
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
	before := s.Row(l.sessionID)
	logins := s.EmuStats().Logins

	first := s.Workers["w1"]
	env := slices.Clone(first.Env())
	dup := harness.NewProc(t, s.Dir, "worker-w1-second", programs.Path("worker"), nil, env)
	dup.Setenv("METRICS_ADDR", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)))
	err := dup.RunToExit(harness.WaitLong)
	if err == nil {
		t.Fatalf("the second worker w1 exited cleanly; want a refusal:\n%s", dup.Tail(20))
	}
	if !dup.LogContains("another running worker uses this WORKER_ID") {
		t.Fatalf("the second worker w1 exited (%v) without saying why:\n%s", err, dup.Tail(20))
	}
	if !first.Running() {
		t.Fatal("the first worker w1 is gone")
	}
	time.Sleep(harness.LeaseTTL) // a heartbeat of w1's runs: its lease is still its own
	after := s.Row(l.sessionID)
	if after.Status != "connected" || str(after.WorkerID) != "w1" || after.LeaseEpoch != before.LeaseEpoch {
		t.Fatalf("session after the second start: status=%s worker=%s epoch=%d, want connected on w1 at epoch %d",
			after.Status, str(after.WorkerID), after.LeaseEpoch, before.LeaseEpoch)
	}
	if st := s.EmuStats(); st.Conflicts != 0 || st.Logins != logins {
		t.Fatalf("emulator %+v: want no login since the first worker's (%d) and no conflict", st, logins)
	}
}
