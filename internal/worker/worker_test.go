package worker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"wasessions/internal/events"
	"wasessions/internal/store"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
	"wasessions/internal/waemu"
	"wasessions/internal/waendpoint"
	"wasessions/tasks"
)

const userA = "11111111-1111-4111-8111-111111111111"

// A user scans the QR the worker wrote to the row: the session becomes
// connected and authenticated with the phone's number and name, the QR is
// cleared, the keys are in Postgres, and the frontend heard both the QR and
// the status change.
func TestPairAndConnect(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.startWorker("w1", workerOpts{})
	sub, err := e.bus.Subscribe(context.Background(), userA)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	s := e.link(w, userA, "+15550001111", "Ana")

	if !s.IsConnected || !s.IsAuthenticated || store.Str(s.PhoneNumber) != "+15550001111" || store.Str(s.UserName) != "Ana" {
		t.Fatalf("connected row = connected:%v auth:%v phone:%q name:%q", s.IsConnected, s.IsAuthenticated,
			store.Str(s.PhoneNumber), store.Str(s.UserName))
	}
	if s.QRCode != nil || s.QRRaw != nil || store.Str(s.StatusReason) != "paired" || store.Str(s.WorkerID) != "w1" {
		t.Fatalf("qr=%v raw=%v reason=%q worker=%q", s.QRCode != nil, s.QRRaw != nil, store.Str(s.StatusReason), store.Str(s.WorkerID))
	}
	if !e.deviceKeys(*s.DeviceJID) {
		t.Fatal("device keys are not in Postgres")
	}
	var sawQR, sawConnected bool
	timeout := time.After(waitFor)
	for !(sawQR && sawConnected) {
		select {
		case ev := <-sub.C:
			if ev.SessionID != s.SessionID {
				t.Fatalf("event for another session: %+v", ev)
			}
			sawQR = sawQR || (ev.Type == events.TypeQR && strings.HasPrefix(ev.QRCode, "data:image/png;base64,") && ev.QRRaw != "")
			sawConnected = sawConnected || (ev.Type == events.TypeStatus && ev.Status == "connected" && ev.Reason == "paired")
		case <-timeout:
			t.Fatalf("events: qr=%v connected=%v", sawQR, sawConnected)
		}
	}
	if st := e.emu.Stats(); st.Pairings != 1 || st.Conflicts != 0 {
		t.Fatalf("emulator stats %+v", st)
	}
}

// asynq delivers at least once: a create handled twice (also concurrently)
// hosts one client and leaves the same state.
func TestCreateDeliveredTwiceHostsOneClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.startWorker("w1", workerOpts{})
	s := e.newSession(userA)
	j, _ := tasks.NewCreate(s.SessionID, 0, "test")
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- w.process(t, j) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := w.process(t, j); err != nil {
		t.Fatal(err)
	}
	if w.Hosted() != 1 {
		t.Fatalf("hosted = %d, want 1", w.Hosted())
	}
	s = e.waitSession(s.SessionID, "showed a QR", func(s store.Session) bool { return s.QRRaw != nil })
	if _, err := e.emu.Scan(context.Background(), *s.QRRaw, "", ""); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.SessionID, "connected", func(s store.Session) bool { return s.Status == store.StatusConnected })
	if err := w.process(t, j); err != nil {
		t.Fatal(err)
	}
	after, _ := e.st.Get(context.Background(), s.SessionID)
	if after.Status != store.StatusConnected || w.Hosted() != 1 {
		t.Fatalf("after a repeated create: status=%s hosted=%d", after.Status, w.Hosted())
	}
	if st := e.emu.Stats(); st.Conflicts != 0 || st.Pairings != 1 {
		t.Fatalf("emulator stats %+v", st)
	}
}

// SIGTERM: the worker disconnects without logging out, releases the lease
// and enqueues a restore that another worker completes from the stored keys,
// with no new pairing and never two connections.
func TestShutdownHandsSessionToAnotherWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w1 := e.startWorker("w1", workerOpts{})
	w2 := e.startWorker("w2", workerOpts{})
	s := e.link(w1, userA, "", "")

	w1.stop()
	rel, _ := e.st.Get(context.Background(), s.SessionID)
	if rel.Status != store.StatusReconnecting || store.Str(rel.StatusReason) != "worker_shutdown" || rel.WorkerID != nil {
		t.Fatalf("after shutdown: status=%s reason=%s worker=%v", rel.Status, store.Str(rel.StatusReason), rel.WorkerID)
	}
	info, err := e.inspector().GetTaskInfo(tasks.QueueShared, tasks.TakeoverID("restore:", s.SessionID, rel.LeaseEpoch))
	if err != nil {
		t.Fatalf("restore task not enqueued: %v", err)
	}
	if info.Type != tasks.TypeSessionRestore {
		t.Fatalf("task type %s", info.Type)
	}
	j, _ := tasks.NewRestore(s.SessionID, 0, "test")
	if err := w2.process(t, j); err != nil {
		t.Fatal(err)
	}
	got := e.waitSession(s.SessionID, "connected on w2", func(s store.Session) bool {
		return s.Status == store.StatusConnected && store.Str(s.WorkerID) == "w2"
	})
	if store.Str(got.StatusReason) != "restored" || got.LeaseEpoch <= s.LeaseEpoch {
		t.Fatalf("reason=%s epoch %d -> %d", store.Str(got.StatusReason), s.LeaseEpoch, got.LeaseEpoch)
	}
	if st := e.emu.Stats(); st.Pairings != 1 || st.Conflicts != 0 {
		t.Fatalf("emulator stats %+v", st)
	}
	// The receiver timed the handoff (the dashboards' handoff duration).
	if n := w2.histogramCount(t, "wasessions_worker_takeover_seconds", "kind", "handoff"); n != 1 {
		t.Fatalf("handoff observations on w2: %d, want 1", n)
	}
}

// The user disconnects: the device is logged out of WhatsApp (the phone's
// list loses it), its keys are deleted, the row ends disconnected. Running
// the task again changes nothing.
func TestDisconnectHostedSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.startWorker("w1", workerOpts{})
	s := e.link(w, userA, "", "")
	if _, err := e.st.RequestDisconnect(context.Background(), userA); err != nil {
		t.Fatal(err)
	}
	j, _ := tasks.NewDisconnect(s.SessionID, "user_disconnected", testfactory.WorkerQueue(t, "w1"))
	for range 2 {
		if err := w.process(t, j); err != nil {
			t.Fatal(err)
		}
	}
	got := e.waitSession(s.SessionID, "disconnected", func(s store.Session) bool { return s.Status == store.StatusDisconnected })
	assertEnded(t, e, got, *s.DeviceJID, "user_disconnected")
	if w.Hosted() != 0 {
		t.Fatalf("hosted = %d", w.Hosted())
	}
}

// A disconnect for a session no worker hosts (its worker is gone) is
// carried out by any worker: it connects the stored device just to log it
// out.
func TestDisconnectUnhostedSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w1 := e.startWorker("w1", workerOpts{})
	w2 := e.startWorker("w2", workerOpts{})
	s := e.link(w1, userA, "", "")
	w1.stop()
	if _, err := e.st.RequestDisconnect(context.Background(), userA); err != nil {
		t.Fatal(err)
	}
	j, _ := tasks.NewDisconnect(s.SessionID, "user_disconnected", tasks.QueueShared)
	if err := w2.process(t, j); err != nil {
		t.Fatal(err)
	}
	got, _ := e.st.Get(context.Background(), s.SessionID)
	assertEnded(t, e, got, *s.DeviceJID, "user_disconnected")
}

// The heartbeat notices a disconnect whose task was lost.
func TestHeartbeatCarriesOutLostDisconnect(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.startWorker("w1", workerOpts{})
	s := e.link(w, userA, "", "")
	if _, err := e.st.RequestDisconnect(context.Background(), userA); err != nil {
		t.Fatal(err)
	}
	got := e.waitSession(s.SessionID, "disconnected", func(s store.Session) bool { return s.Status == store.StatusDisconnected })
	assertEnded(t, e, got, *s.DeviceJID, "user_disconnected")
}

func assertEnded(t *testing.T, e *env, s store.Session, jid, reason string) {
	t.Helper()
	if s.Status != store.StatusDisconnected || s.IsConnected || s.IsAuthenticated || s.DeviceJID != nil ||
		store.Str(s.StatusReason) != reason || s.WorkerID != nil {
		t.Fatalf("ended row: status=%s connected=%v auth=%v device=%v reason=%s worker=%v err=%s", s.Status, s.IsConnected,
			s.IsAuthenticated, s.DeviceJID, store.Str(s.StatusReason), s.WorkerID, store.Str(s.LastError))
	}
	if e.deviceKeys(jid) {
		t.Fatal("device keys still in Postgres")
	}
	if _, err := e.emu.Device(jid); !errors.Is(err, waemu.ErrUnknownDevice) {
		t.Fatalf("emulator still knows the device (err=%v): the phone would still list it", err)
	}
	if s.LastError != nil {
		t.Fatalf("last error: %s", *s.LastError)
	}
}

// The phone unlinks the device: the session ends logged_out and the keys
// are deleted.
func TestPhoneUnlinks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.startWorker("w1", workerOpts{})
	s := e.link(w, userA, "", "")
	if err := e.emu.Unlink(*s.DeviceJID); err != nil {
		t.Fatal(err)
	}
	got := e.waitSession(s.SessionID, "logged out", func(s store.Session) bool { return s.Status == store.StatusLoggedOut })
	if store.Str(got.StatusReason) != "phone_unlinked" || got.IsAuthenticated || got.DeviceJID != nil {
		t.Fatalf("reason=%s auth=%v device=%v", store.Str(got.StatusReason), got.IsAuthenticated, got.DeviceJID)
	}
	testfactory.EventuallyIn(t, "keys deleted", waitFor, func() bool { return !e.deviceKeys(*s.DeviceJID) })
	testfactory.EventuallyIn(t, "client gone", waitFor, func() bool { return w.Hosted() == 0 })
}

// A dropped socket: whatsmeow reconnects by itself; the row shows
// reconnecting, then connected again, with no new pairing.
func TestDroppedSocketReconnects(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.startWorker("w1", workerOpts{})
	s := e.link(w, userA, "", "")
	sub, err := e.bus.Subscribe(context.Background(), userA)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if _, err := e.emu.Drop(*s.DeviceJID); err != nil {
		t.Fatal(err)
	}
	var sawReconnecting bool
	timeout := time.After(waitFor)
	for {
		select {
		case ev := <-sub.C:
			if ev.Status == "reconnecting" && ev.Reason == "connection_lost" {
				sawReconnecting = true
			}
			if ev.Status == "connected" && ev.Reason == "reconnected" {
				if !sawReconnecting {
					t.Fatal("connected again without a reconnecting event first")
				}
				if st := e.emu.Stats(); st.Pairings != 1 || st.Conflicts != 0 {
					t.Fatalf("emulator stats %+v", st)
				}
				return
			}
		case <-timeout:
			t.Fatalf("no reconnect (saw reconnecting: %v)", sawReconnecting)
		}
	}
}

// Without a reachable WhatsApp server a new session fails with an error
// that says so, and the worker carries on with other work.
func TestUnreachableServerFailsSessionNotWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dead := waendpoint.Endpoint{Addr: "127.0.0.1:1", RootKey: e.emu.PubKey()}
	w := e.startWorker("w1", workerOpts{endpoint: &dead})
	for i, user := range []string{userA, "22222222-2222-4222-8222-222222222222"} {
		s := e.newSession(user)
		j, _ := tasks.NewCreate(s.SessionID, 0, "test")
		if err := w.process(t, j); err != nil {
			t.Fatalf("session %d: handler error %v", i, err)
		}
		got, _ := e.st.Get(context.Background(), s.SessionID)
		// The code only: the raw error names the address, and is logged.
		if got.Status != store.StatusFailed || store.Str(got.LastError) != string(store.ErrServerUnreachable) {
			t.Fatalf("session %d: status=%s last_error=%q", i, got.Status, store.Str(got.LastError))
		}
		if got.WorkerID != nil || w.Hosted() != 0 {
			t.Fatalf("session %d: worker=%v hosted=%d", i, got.WorkerID, w.Hosted())
		}
	}
}

// Nobody scans: when the QR codes run out the session ends expired with
// reason qr_timeout, and the user can create a new one.
func TestQRTimeoutExpiresSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	emu, err := waemu.Start(context.Background(), waemu.Options{ListenAddr: "127.0.0.1:0", KeySeed: emuSeed, QRTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	ep := waendpoint.Endpoint{Addr: emu.Addr(), RootKey: emu.PubKey()}
	w := e.startWorker("w1", workerOpts{endpoint: &ep})
	s := e.newSession(userA)
	j, _ := tasks.NewCreate(s.SessionID, 0, "test")
	if err := w.process(t, j); err != nil {
		t.Fatal(err)
	}
	got := e.waitSession(s.SessionID, "expired", func(s store.Session) bool { return s.Status == store.StatusExpired })
	if store.Str(got.StatusReason) != "qr_timeout" || got.QRCode != nil || got.WorkerID != nil {
		t.Fatalf("reason=%s qr=%v worker=%v", store.Str(got.StatusReason), got.QRCode != nil, got.WorkerID)
	}
	testfactory.EventuallyIn(t, "client gone", waitFor, func() bool { return w.Hosted() == 0 })
	if _, created, err := e.st.CreateSession(context.Background(), store.NewSession{UserID: userA, SessionID: "whatsapp_again", TTL: time.Hour}); err != nil || !created {
		t.Fatalf("new session after expiry: created=%v err=%v", created, err)
	}
}

// Pairing by phone number: the worker writes an 8-character code; the
// phone enters it and the session connects.
func TestPairingCode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.startWorker("w1", workerOpts{})
	s, _, err := e.st.CreateSession(context.Background(), store.NewSession{UserID: userA, SessionID: "whatsapp_code", TTL: time.Hour, PairPhone: "+15550002222"})
	if err != nil {
		t.Fatal(err)
	}
	j, _ := tasks.NewCreate(s.SessionID, 0, "test")
	if err := w.process(t, j); err != nil {
		t.Fatal(err)
	}
	s = e.waitSession(s.SessionID, "showed a pairing code", func(s store.Session) bool { return s.PairingCode != nil })
	if code := *s.PairingCode; len(code) != 9 || code[4] != '-' || s.QRCode != nil {
		t.Fatalf("pairing code %q, qr set: %v", code, s.QRCode != nil)
	}
	if _, err := e.emu.PairCode(context.Background(), *s.PairingCode, "+15550002222", "Bea"); err != nil {
		t.Fatal(err)
	}
	got := e.waitSession(s.SessionID, "connected", func(s store.Session) bool { return s.Status == store.StatusConnected })
	if store.Str(got.PhoneNumber) != "+15550002222" || store.Str(got.UserName) != "Bea" || got.PairingCode != nil {
		t.Fatalf("phone=%s name=%s code=%v", store.Str(got.PhoneNumber), store.Str(got.UserName), got.PairingCode)
	}
}

// Heartbeats slide a connected session's expiry forward.
func TestHeartbeatSlidesExpiry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.startWorker("w1", workerOpts{})
	s := e.link(w, userA, "", "")
	if _, err := e.st.Pool().Exec(context.Background(),
		`UPDATE whatsapp_sessions SET expires_at = now() + interval '1 minute' WHERE session_id = $1`, s.SessionID); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.SessionID, "slid to now + SESSION_TTL", func(s store.Session) bool {
		return s.ExpiresAt != nil && time.Until(*s.ExpiresAt) > 50*time.Minute
	})
}

// When Postgres is unreachable the worker cannot renew its leases; it stops
// its clients before they can run out in Postgres, so another worker can
// safely take over after the lease ends. After Postgres returns, the
// session is restored elsewhere without a new pairing or any conflict.
func TestSelfFencingWhenPostgresIsDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pg := testenv.StartPostgresServer(t)
	dsn := pg.NewDatabase(t)
	pool, err := store.Connect(context.Background(), dsn, 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	testenv.Migrate(t, pool)
	private := store.New(pool)
	e.st = private
	w1 := e.startWorker("w1", workerOpts{pool: private})
	s := e.link(w1, userA, "", "")

	pg.Stop()
	testfactory.EventuallyIn(t, "w1 stopped its client", waitFor, func() bool { return w1.Hosted() == 0 })
	dev, err := e.emu.Device(*s.DeviceJID)
	if err != nil || dev.Connected {
		t.Fatalf("emulator device connected=%v err=%v", dev.Connected, err)
	}
	pg.Start()
	w2 := e.startWorker("w2", workerOpts{pool: private})
	j, _ := tasks.NewRestore(s.SessionID, 0, "test")
	testfactory.EventuallyIn(t, "lease lapsed and w2 restored", waitFor, func() bool {
		_ = w2.process(t, j)
		got, err := private.Get(context.Background(), s.SessionID)
		return err == nil && got.Status == store.StatusConnected && store.Str(got.WorkerID) == "w2"
	})
	if st := e.emu.Stats(); st.Pairings != 1 || st.Conflicts != 0 {
		t.Fatalf("emulator stats %+v", st)
	}
}

// Rebalancing: a handoff task makes the hosting worker release a connected
// session and enqueue its restore on the target worker's own queue; the
// target restores it from the keys. No new pairing, never two connections.
// A session still pairing is not moved.
func TestHandoffMovesSessionToTargetWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w1 := e.startWorker("w1", workerOpts{})
	w2 := e.startWorker("w2", workerOpts{})
	s := e.link(w1, userA, "", "")

	j, err := tasks.NewHandoff(s.SessionID, "w1", "w2")
	if err != nil {
		t.Fatal(err)
	}
	if err := w1.process(t, j); err != nil {
		t.Fatal(err)
	}
	rel, _ := e.st.Get(context.Background(), s.SessionID)
	if rel.Status != store.StatusReconnecting || store.Str(rel.StatusReason) != "rebalance" || rel.WorkerID != nil || w1.Hosted() != 0 {
		t.Fatalf("after handoff: status=%s reason=%s worker=%v hosted=%d", rel.Status, store.Str(rel.StatusReason), rel.WorkerID, w1.Hosted())
	}
	if _, err := e.inspector().GetTaskInfo(testfactory.WorkerQueue(t, "w2"), tasks.TakeoverID("restore:", s.SessionID, rel.LeaseEpoch)); err != nil {
		t.Fatalf("restore not enqueued on w2's queue: %v", err)
	}
	r, _ := tasks.NewRestoreOn(s.SessionID, rel.LeaseEpoch, "rebalance", testfactory.WorkerQueue(t, "w2"))
	if err := w2.process(t, r); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.SessionID, "connected on w2", func(s store.Session) bool {
		return s.Status == store.StatusConnected && store.Str(s.WorkerID) == "w2"
	})
	if st := e.emu.Stats(); st.Pairings != 1 || st.Conflicts != 0 {
		t.Fatalf("emulator stats %+v", st)
	}

	// A handoff for a session still showing its QR leaves it where it is.
	p := e.newSession("33333333-3333-4333-8333-333333333333")
	c, _ := tasks.NewCreate(p.SessionID, 0, "test")
	if err := w2.process(t, c); err != nil {
		t.Fatal(err)
	}
	e.waitSession(p.SessionID, "showed a QR", func(s store.Session) bool { return s.QRRaw != nil })
	h, _ := tasks.NewHandoff(p.SessionID, "w2", "w1")
	if err := w2.process(t, h); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.st.Get(context.Background(), p.SessionID); got.Status != store.StatusQR || store.Str(got.WorkerID) != "w2" {
		t.Fatalf("pairing session moved: status=%s worker=%s", got.Status, store.Str(got.WorkerID))
	}
}
