package worker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"wasessions/internal/store"
	"wasessions/internal/waendpoint"
	"wasessions/internal/worker"
	"wasessions/tasks"
)

// A heartbeat that learns a lease was lost acts on the hosting it renewed,
// not on whatever hosts the same session id by the time the answer comes:
// when the session was handed off and hosted again on this worker between
// the heartbeat's snapshot and its statement, the answer about the old
// hosting must not stop the new one (issue 9, bug 6).
func TestLostLeaseStopsOnlyTheHostingItWasAbout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var (
		calls   atomic.Int32
		armed   atomic.Bool
		once    sync.Once
		blocked = make(chan struct{})
		resume  = make(chan struct{})
	)
	w1 := e.startWorker("w1", workerOpts{setup: func(w *worker.Worker) {
		worker.SetBeforeRenew(w, func() {
			calls.Add(1)
			if armed.Load() {
				once.Do(func() { close(blocked); <-resume })
			}
		})
	}})
	s := e.link(w1, userA, "", "")
	armed.Store(true)
	<-blocked // a heartbeat holds the first hosting in its snapshot

	// The first hosting ends (handed to a worker that never takes it) and
	// a restore hosts the session again, here, under a new epoch.
	h, _ := tasks.NewHandoff(s.SessionID, "w1", "w9")
	if err := w1.process(t, h); err != nil {
		t.Fatal(err)
	}
	r, _ := tasks.NewRestore(s.SessionID, 0, "test")
	if err := w1.process(t, r); err != nil {
		t.Fatal(err)
	}
	second := e.waitSession(s.SessionID, "connected again on w1", func(s store.Session) bool {
		return s.Status == store.StatusConnected && store.Str(s.WorkerID) == "w1"
	})
	close(resume) // the renewal for the first hosting's epoch: lost

	// Two more heartbeats (a heartbeat with nothing hosted does not
	// count): whatever the lost lease triggered has run.
	n := calls.Load()
	waitUntil(t, "two more heartbeats", func() bool { return calls.Load() >= n+2 || w1.Hosted() == 0 })
	got, _ := e.st.Get(context.Background(), s.SessionID)
	dev, err := e.emu.Device(*s.DeviceJID)
	if w1.Hosted() != 1 || got.Status != store.StatusConnected || got.LeaseEpoch != second.LeaseEpoch || err != nil || !dev.Connected {
		t.Fatalf("the new hosting was stopped: hosted=%d status=%s reason=%s epoch=%d (want %d) device connected=%v (%v)",
			w1.Hosted(), got.Status, store.Str(got.StatusReason), got.LeaseEpoch, second.LeaseEpoch, dev.Connected, err)
	}
	if st := e.emu.Stats(); st.Pairings != 1 || st.Conflicts != 0 {
		t.Fatalf("emulator stats %+v", st)
	}
}

// A restore whose client cannot connect (here the server answers the
// websocket upgrade with 404) is released by the restore task's own
// handler, which enqueues the takeover while it is still running. asynq
// must not take that takeover for a duplicate of the running task and
// swallow it, or the session waits for the next reconcile pass (issue 9,
// bug 5). No reconciler runs here: only the released worker's task can
// bring the session back.
func TestTakeoverAfterReleaseIsNotSwallowed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w1 := e.startWorker("w1", workerOpts{})
	s := e.link(w1, userA, "", "")
	w1.stop() // enqueues the restore on wa:shared

	notWA := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(notWA.Close)
	bad := waendpoint.Endpoint{Addr: notWA.Listener.Addr().String(), RootKey: e.emu.PubKey()}
	w2 := e.startWorker("w2", workerOpts{endpoint: &bad, serve: true})
	e.waitSession(s.SessionID, "released by w2's restore task", func(s store.Session) bool {
		return store.Str(s.StatusReason) == string(store.ReasonConnectFailed) && s.WorkerID == nil
	})
	w2.stop()

	e.startWorker("w3", workerOpts{serve: true})
	e.waitSession(s.SessionID, "restored on w3", func(s store.Session) bool {
		return s.Status == store.StatusConnected && store.Str(s.WorkerID) == "w3"
	})
	if st := e.emu.Stats(); st.Pairings != 1 || st.Conflicts != 0 {
		t.Fatalf("emulator stats %+v", st)
	}
}
