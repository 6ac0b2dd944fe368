package worker_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	waevents "go.mau.fi/whatsmeow/types/events"

	"wasessions/internal/queue"
	"wasessions/internal/store"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
	"wasessions/internal/waemu"
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
	testfactory.EventuallyIn(t, "two more heartbeats", waitFor, func() bool { return calls.Load() >= n+2 || w1.Hosted() == 0 })
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

// The takeover a worker enqueues when it releases a session must not be
// taken by asynq for the task that started the hosting it releases (issue
// 9, bug 5). Here w2 takes the restore task from wa:shared; its client
// dials, but WhatsApp refuses the login (503), so the task's handler is
// still waiting for the login (ConnectTimeout) when the session loop, after
// ReleaseAfter without a connection and with no other worker running,
// releases the session and enqueues its restore on wa:shared. With one id
// per session ("restore:<sid>") asynq answered "already queued" (the
// active task), the handler then returned and the session was left to the
// next reconcile pass. No reconciler runs here: only that enqueue can bring
// the session back, on w3.
func TestTakeoverAfterReleaseIsNotSwallowed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w1 := e.startWorker("w1", workerOpts{connectTimeout: time.Minute})
	s := e.link(w1, userA, "", "")
	e.emu.RefuseLogins(time.Hour)
	w1.stop() // enqueues the restore on wa:shared

	type enqueued struct {
		res queue.Result
		err error
	}
	var (
		takeover = make(chan enqueued, 1)
		once     sync.Once
	)
	w2 := e.startWorker("w2", workerOpts{serve: true, releaseAfter: 2 * time.Second, connectTimeout: time.Minute,
		setup: func(w *worker.Worker) {
			// The handler holds its task active until the release has
			// enqueued the takeover: asynq retires a task only after
			// its handler returns, a few milliseconds after the release
			// wakes it, and that race must not decide the test.
			worker.SetHostReturns(w, func(string) {
				select {
				case got := <-takeover:
					takeover <- got
				case <-time.After(waitFor):
				}
			})
			worker.SetTakeoverEnqueued(w, func(_ string, res queue.Result, err error) {
				once.Do(func() { takeover <- enqueued{res, err} })
			})
		}})
	rel := e.waitSession(s.SessionID, "released by w2", func(s store.Session) bool {
		return store.Str(s.StatusReason) == string(store.ReasonUnreachable) && s.WorkerID == nil
	})
	var got enqueued
	select {
	case got = <-takeover:
		takeover <- got
	case <-time.After(waitFor):
		t.Fatal("w2 released the session but never enqueued its takeover")
	}
	if got.err != nil || got.res != queue.Enqueued {
		t.Fatalf("the takeover after the release: %v (%v), want %v: taken for the restore task still running on w2",
			got.res, got.err, queue.Enqueued)
	}
	e.emu.RefuseLogins(0)
	w2.stop()

	e.startWorker("w3", workerOpts{serve: true})
	back := e.waitSession(s.SessionID, "restored on w3", func(s store.Session) bool {
		return s.Status == store.StatusConnected && store.Str(s.WorkerID) == "w3"
	})
	if back.LeaseEpoch <= rel.LeaseEpoch {
		t.Fatalf("lease epoch %d after the restore, want above the released %d", back.LeaseEpoch, rel.LeaseEpoch)
	}
	if st := e.emu.Stats(); st.Pairings != 1 || st.Conflicts != 0 {
		t.Fatalf("emulator stats %+v", st)
	}
}

// A heartbeat that runs between a handoff's release and the end of the
// hosting finds the lease gone, as it would a stolen one. That is no lost
// lease: the worker gave it up. Before, every such session counted in
// leases_lost{cause="taken"} and logged "lease lost", so a deploy looked
// on the dashboard like sessions taken from under their workers.
func TestReleaseIsNotALostLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	checked := make(chan string, 4)
	var renewed atomic.Bool
	w1 := e.startWorker("w1", workerOpts{setup: func(w *worker.Worker) {
		worker.SetLeaseLostChecked(w, func(id string) { checked <- id })
		worker.SetAfterLeaveWrite(w, func(id string) {
			// The release has committed; the client still runs. A
			// heartbeat now finds the lease gone.
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			worker.RenewNow(ctx, w)
			select {
			case got := <-checked:
				if got == id {
					renewed.Store(true)
				}
			case <-ctx.Done():
			}
		})
	}})
	s := e.link(w1, userA, "", "")
	w1.stop() // hands the session over: Release, then the client stops
	if !renewed.Load() {
		t.Fatal("the heartbeat after the release did not find the lease gone: the test proves nothing")
	}
	rel, err := e.st.Get(context.Background(), s.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	if rel.WorkerID != nil || store.Str(rel.StatusReason) != string(store.ReasonWorkerShutdown) {
		t.Fatalf("after the handoff: worker %v, reason %v; want released for worker_shutdown", rel.WorkerID, store.Str(rel.StatusReason))
	}
	for _, cause := range []string{"taken", "deleted", "fenced"} {
		if n := w1.counterValue(t, "wasessions_worker_leases_lost_total", "cause", cause); n != 0 {
			t.Errorf("leases_lost{cause=%q} = %v after a handoff, want 0", cause, n)
		}
	}
}

// A state write that fails while Postgres restarts is retried until it
// applies, not dropped after a few seconds: the phone scans while the
// worker cannot reach Postgres (whatsmeow's own key store still can), and
// once Postgres is back the row shows the linked device, connected, as the
// client is (issue 9, bug 1). A dropped write left it in "qr" without a
// device, so the next handoff would have shown a new QR.
func TestStateWriteSurvivesPostgresOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	proxied, pg := e.proxiedStore(4)
	w1 := e.startWorker("w1", workerOpts{pool: proxied, waPool: e.st, leaseTTL: 30 * time.Second})
	s := e.newSession(userA)
	j, _ := tasks.NewCreate(s.SessionID, 0, "test")
	if err := w1.process(t, j); err != nil {
		t.Fatal(err)
	}
	s = e.waitSession(s.SessionID, "showed a QR", func(s store.Session) bool { return s.QRRaw != nil })

	pg.Down()
	jid, err := e.emu.Scan(context.Background(), *s.QRRaw, "", "")
	if err != nil {
		t.Fatal(err)
	}
	testfactory.EventuallyIn(t, "the client to log in", waitFor, func() bool {
		d, err := e.emu.Device(jid)
		return err == nil && d.Connected
	})
	time.Sleep(6 * time.Second) // the outage outlasts the old retry budget (~3 s)
	pg.Up()

	got := e.waitSession(s.SessionID, "connected with its device", func(s store.Session) bool {
		return s.Status == store.StatusConnected && store.Str(s.DeviceJID) == jid
	})
	if store.Str(got.WorkerID) != "w1" || w1.Hosted() != 1 {
		t.Fatalf("worker=%s hosted=%d", store.Str(got.WorkerID), w1.Hosted())
	}
	if st := e.emu.Stats(); st.Pairings != 1 || st.Conflicts != 0 {
		t.Fatalf("emulator stats %+v", st)
	}
}

// With a Postgres that hangs (no answer, no refusal) the heartbeat cannot
// renew, and the worker must stop its client before the lease can lapse in
// Postgres, by its own clock, with time to spare: the safety margin
// (LEASE_TTL/10) is what keeps another worker's restore from overlapping a
// client still connected here. A renewal stuck in a hanging statement must
// not hold the fence check up (issue 9, bug 2).
func TestFenceStopsClientBeforeLeaseEndsWhenPostgresHangs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	proxied, pg := e.proxiedStore(4)
	// A 10 s lease (margin 1 s) rather than the suite's 3 s: the margin is
	// for drift and the disconnect, and a machine running many suites at
	// once can delay a goroutine by a few hundred milliseconds; the bug
	// (the fence waiting on the renewal) stops the client at the lapse or
	// after it, whatever the TTL.
	const ttl = 10 * time.Second
	w1 := e.startWorker("w1", workerOpts{pool: proxied, waPool: e.st, leaseTTL: ttl})
	s := e.link(w1, userA, "", "")

	pg.Hang()
	t.Cleanup(pg.Unhang)
	deadline := time.Now().Add(waitFor)
	for w1.Hosted() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the client was never stopped")
		}
		time.Sleep(2 * time.Millisecond)
	}
	// The moment the client was seen stopped, against the lease's end in
	// Postgres (same host, same clock): the query's own delay is not
	// counted against the worker.
	stopped := time.Now()
	var until time.Time
	if err := e.st.Pool().QueryRow(context.Background(),
		`SELECT lease_until FROM whatsapp_sessions WHERE session_id = $1`,
		s.SessionID).Scan(&until); err != nil {
		t.Fatal(err)
	}
	left := until.Sub(stopped)
	margin := ttl / 10
	t.Logf("FIGURE fence: client stopped %s before the lease lapsed in Postgres (LEASE_TTL %s, safety margin %s)", left, ttl, margin)
	if left < margin/3 {
		t.Fatalf("client stopped only %s before its lease lapsed in Postgres; the safety margin is %s", left, margin)
	}
	if d, err := e.emu.Device(*s.DeviceJID); err != nil || d.Connected {
		t.Fatalf("device still connected=%v (%v)", d.Connected, err)
	}
}

// SIGTERM while the phone is scanning: whatsmeow has saved the keys and
// confirmed the pairing, but PairSuccess has not reached the session's
// loop when the handoff does. The session must be released as linked (a
// restore elsewhere, from the keys), not as unpaired (a new QR the user
// would have to scan again) (issue 9, bug 3).
func TestPairingCompletedDuringShutdownIsKept(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var (
		once   sync.Once
		paired = make(chan struct{})
		resume = make(chan struct{})
	)
	w1 := e.startWorker("w1", workerOpts{setup: func(w *worker.Worker) {
		worker.SetBeforeEvent(w, func(evt any) {
			switch evt.(type) {
			case *waevents.PairSuccess:
				once.Do(func() { close(paired) })
				<-resume
			case *waevents.Connected:
				<-resume
			}
		})
	}})
	w2 := e.startWorker("w2", workerOpts{})
	s := e.newSession(userA)
	j, _ := tasks.NewCreate(s.SessionID, 0, "test")
	if err := w1.process(t, j); err != nil {
		t.Fatal(err)
	}
	s = e.waitSession(s.SessionID, "showed a QR", func(s store.Session) bool { return s.QRRaw != nil })
	scanned := make(chan error, 1)
	go func() {
		_, err := e.emu.Scan(context.Background(), *s.QRRaw, "", "")
		scanned <- err
	}()
	<-paired // keys saved, pairing confirmed; the loop has not heard of it

	stopped := make(chan struct{})
	go func() { w1.stop(); close(stopped) }()
	rel := e.waitSession(s.SessionID, "released by w1", func(s store.Session) bool { return s.WorkerID == nil })
	close(resume)
	<-stopped
	if err := <-scanned; err != nil {
		t.Fatal(err)
	}
	if rel.DeviceJID == nil || rel.Status != store.StatusReconnecting {
		t.Fatalf("the pairing was thrown away: status=%s reason=%s device=%v", rel.Status, store.Str(rel.StatusReason), rel.DeviceJID)
	}
	r, _ := tasks.NewRestore(s.SessionID, rel.LeaseEpoch, "test")
	if err := w2.process(t, r); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.SessionID, "restored on w2", func(s store.Session) bool {
		return s.Status == store.StatusConnected && store.Str(s.WorkerID) == "w2"
	})
	if st := e.emu.Stats(); st.Pairings != 1 || st.Conflicts != 0 {
		t.Fatalf("emulator stats %+v", st)
	}
}

// A client whose hosting ended cannot log in again, whatever whatsmeow's
// own goroutines do afterwards (auto-reconnect, the reconnect after stream
// error 515): they connect with the client's background context, which
// ends with the hosting. Otherwise the stray client would replace the
// rightful new owner's connection, which then ends the session as
// "stream_replaced" (issue 9, suspicion a).
func TestStoppedClientCannotLogInAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w1 := e.startWorker("w1", workerOpts{})
	s := e.link(w1, userA, "", "")
	cli := worker.Client(w1.Worker, s.SessionID)
	h, _ := tasks.NewHandoff(s.SessionID, "w1", "w9")
	if err := w1.process(t, h); err != nil {
		t.Fatal(err)
	}
	logins := e.emu.Stats().Logins

	err := cli.Connect() // what whatsmeow's reconnect goroutines do
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if d, _ := e.emu.Device(*s.DeviceJID); d.Connected || e.emu.Stats().Logins != logins {
			t.Fatalf("a client whose hosting ended logged in again (Connect: %v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cli.Disconnect()
}

// Shutdown hands sessions off within its budget even when Postgres hangs:
// the release write is abandoned when the budget runs out instead of
// retrying on its own clock (issue 9, suspicion e).
func TestShutdownKeepsItsBudgetWhenPostgresHangs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	proxied, pg := e.proxiedStore(4)
	w1 := e.startWorker("w1", workerOpts{pool: proxied, waPool: e.st, leaseTTL: 60 * time.Second})
	s := e.link(w1, userA, "", "")

	pg.Hang()
	t.Cleanup(pg.Unhang)
	const budget = 2 * time.Second
	done := make(chan struct{})
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), budget)
		defer cancel()
		w1.Shutdown(ctx)
		close(done)
	}()
	select {
	case <-done:
		t.Logf("FIGURE postgres-hang Shutdown returned after %s (budget %s)", time.Since(start).Round(time.Millisecond), budget)
	case <-time.After(budget + 10*time.Second):
		t.Fatalf("Shutdown still running %s after its %s budget ran out", 10*time.Second, budget)
	}
	if d, err := e.emu.Device(*s.DeviceJID); err != nil || d.Connected {
		t.Fatalf("device still connected=%v (%v) after Shutdown", d.Connected, err)
	}
}

// A slow Postgres is not an outage: with every round trip taking 500 ms
// (a loaded or distant database), each renewal still succeeds within its
// budget and the client keeps running. The budget is the renewal period
// (LEASE_TTL/3, 2 s here). A renewal costs up to three round trips: pgxpool
// pings a connection idle for over a second before handing it out (the
// heartbeat's connections always are), and a connection prepares the
// statement the first time it runs it, so 1.5 s here; at 700 ms round trips
// that is 2.1 s and every renewal timed out. Safety does not depend on the
// budget, since the fence check runs on its own clock and counts validity
// from before each statement was sent. A budget capped at the safety margin
// (LEASE_TTL/10, 600 ms here) failed every renewal and the fence stopped a
// healthy client.
func TestSlowPostgresIsNotAnOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	proxied, pg := e.proxiedStore(4)
	const ttl = 6 * time.Second
	// A login right after pairing uploads prekeys first, which on a busy
	// machine can take longer than the default 15 s.
	w1 := e.startWorker("w1", workerOpts{pool: proxied, waPool: e.st, leaseTTL: ttl, connectTimeout: time.Minute})
	s := e.link(w1, userA, "", "")

	pg.Latency(250 * time.Millisecond) // each way
	time.Sleep(2 * ttl)                // six heartbeats; the fence stops a client within one LEASE_TTL
	pg.NoLatency()
	got, err := e.st.Get(context.Background(), s.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	if w1.Hosted() != 1 || got.LeaseEpoch != s.LeaseEpoch || store.Str(got.WorkerID) != "w1" {
		t.Fatalf("with 500 ms round trips to Postgres: hosted=%d worker=%s epoch=%d (was %d): the client was stopped",
			w1.Hosted(), store.Str(got.WorkerID), got.LeaseEpoch, s.LeaseEpoch)
	}
	if d, err := e.emu.Device(*s.DeviceJID); err != nil || !d.Connected {
		t.Fatalf("device connected=%v (%v)", d.Connected, err)
	}
}

// The heartbeat keeps renewing while every connection of the worker's main
// Postgres pool is taken (whatsmeow's key store and the session writes
// share it: a burst of prekey uploads, slow queries): it has a small pool
// of its own. Sharing the main pool, the renewals waited for a connection
// until they timed out, and the fence check stopped a healthy client
// (issue 9, bug 2: "give heartbeats connections that whatsmeow's store
// traffic cannot exhaust").
func TestHeartbeatRenewsWhileMainPoolIsExhausted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pool, err := store.Connect(context.Background(), e.dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	w1 := e.startWorker("w1", workerOpts{pool: store.New(pool), leases: e.leaseStore(), connectTimeout: time.Minute})
	s := e.link(w1, userA, "", "")

	for range pool.Config().MaxConns {
		c, err := pool.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release()
	}
	time.Sleep(2 * leaseTTL) // six heartbeats; the fence stops a client within one LEASE_TTL
	got, err := e.st.Get(context.Background(), s.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	if w1.Hosted() != 1 || !got.LeaseLive || got.LeaseEpoch != s.LeaseEpoch {
		t.Fatalf("with the main pool exhausted: hosted=%d lease live=%v epoch=%d (was %d): the heartbeat starved",
			w1.Hosted(), got.LeaseLive, got.LeaseEpoch, s.LeaseEpoch)
	}
	if d, err := e.emu.Device(*s.DeviceJID); err != nil || !d.Connected {
		t.Fatalf("device connected=%v (%v)", d.Connected, err)
	}
}

// A logout of a session no worker hosts (its user disconnected it while it
// was between workers) holds its claim for as long as it takes. Connecting
// and logging out over a slow path outlasts LEASE_TTL; a claim nobody
// renewed then lapsed, and a second disconnect (the reconciler's, on
// another worker) claimed the session too and logged the same device in
// and out alongside the first (issue 9, suspicion b).
func TestLogoutOfUnhostedSessionHoldsItsClaim(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w1 := e.startWorker("w1", workerOpts{connectTimeout: time.Minute})
	s := e.link(w1, userA, "", "")
	h, _ := tasks.NewHandoff(s.SessionID, "w1", "w9") // released; nobody takes it
	if err := w1.process(t, h); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.SessionID, "released", func(s store.Session) bool { return s.WorkerID == nil })
	if _, err := e.st.RequestDisconnect(context.Background(), userA); err != nil {
		t.Fatal(err)
	}

	slow := testenv.NewFaultProxy(t, "whatsapp", e.emu.Addr())
	slow.Latency(time.Second) // each way: connect, login and logout take ~8 s
	ep := waendpoint.Endpoint{Addr: slow.Addr, RootKey: e.emu.PubKey()}
	w2 := e.startWorker("w2", workerOpts{endpoint: &ep})
	w3 := e.startWorker("w3", workerOpts{})
	j, _ := tasks.NewDisconnect(s.SessionID, "test", tasks.QueueShared)
	first := make(chan error, 1)
	go func() { first <- w2.process(t, j) }()
	claimed := e.waitSession(s.SessionID, "claimed by w2", func(s store.Session) bool { return store.Str(s.WorkerID) == "w2" })

	time.Sleep(leaseTTL + leaseTTL/2) // past the claim's first LEASE_TTL
	select {
	case err := <-first:
		t.Fatalf("w2's logout ended within %s (%v): the path is not slow enough for this test", leaseTTL+leaseTTL/2, err)
	default:
	}
	if err := w3.process(t, j); err != nil {
		t.Fatalf("w3's disconnect: %v", err)
	}
	if err := <-first; err != nil {
		t.Fatalf("w2's disconnect: %v", err)
	}
	got, err := e.st.Get(context.Background(), s.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	if got.LeaseEpoch != claimed.LeaseEpoch || got.Status.Live() {
		t.Fatalf("the session ended %s at lease epoch %d, want ended by w2's claim (epoch %d): w3 claimed it during w2's logout",
			got.Status, got.LeaseEpoch, claimed.LeaseEpoch)
	}
	if _, err := e.emu.Device(*s.DeviceJID); !errors.Is(err, waemu.ErrUnknownDevice) {
		t.Fatalf("the device is still linked at WhatsApp (%v)", err)
	}
	if st := e.emu.Stats(); st.Conflicts != 0 {
		t.Fatalf("emulator stats %+v: two clients of the device were connected at once", st)
	}
}
