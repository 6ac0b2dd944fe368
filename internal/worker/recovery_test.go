package worker_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/stdlib"
	wastore "go.mau.fi/whatsmeow/store"

	"wasessions/internal/store"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
	"wasessions/internal/wa"
	"wasessions/internal/waendpoint"
	"wasessions/tasks"
)

func user(n int) string { return fmt.Sprintf("20000000-0000-4000-8000-%012d", n) }

// versionsFrom is a version keeper that reads the emulator's version
// document (the control API's GET /web), as WA_VERSION_URL makes a worker do.
func (e *env) versionsFrom() *wa.Versions {
	e.t.Helper()
	ctl := httptest.NewServer(e.emu.Handler())
	e.t.Cleanup(ctl.Close)
	return wa.NewVersions(wa.VersionOptions{Fetch: true, URL: ctl.URL + "/web"})
}

func newer(v wastore.WAVersionContainer) wastore.WAVersionContainer {
	v[2]++
	return v
}

// WhatsApp retires the client version while sessions are connected: their
// sockets drop, the next logins are refused with 405 (ClientOutdated), the
// worker fetches the version document, finds a newer version and every
// session reconnects with it at once. No session fails and no new pairing
// happens (issue 16: before, each session ended 'failed' and needed a scan).
func TestClientOutdatedReconnectsWithFetchedVersion(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	versions := e.versionsFrom()
	w := e.startWorker("w1", workerOpts{host: wa.HostOptions{Versions: versions}})
	var ss []store.Session
	for i := range 3 {
		ss = append(ss, e.link(w, user(i), "", ""))
	}
	old := versions.Current()
	next := newer(old)
	e.emu.SetServedVersion(next)
	e.emu.SetMinVersion(next)

	for _, s := range ss {
		e.waitSession(s.SessionID, "reconnected with the new version", func(s store.Session) bool {
			return s.Status == store.StatusConnected && store.Str(s.StatusReason) == "reconnected"
		})
	}
	if got := versions.Current(); got != next {
		t.Fatalf("worker announces %s, want %s", got, next)
	}
	if st := e.emu.Stats(); st.Pairings != 3 {
		t.Fatalf("pairings = %d, want 3 (no new scan)", st.Pairings)
	}
	if rs := e.emu.RefusalStats(); rs.Outdated == 0 {
		t.Fatalf("the emulator never refused the old version: %+v", rs)
	}
}

// No newer version is known yet: the session waits, reconnecting with
// reason client_outdated, and retries with backoff; once the version
// document announces a newer one, it reconnects without a scan.
func TestClientOutdatedWaitsForNewerVersion(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	versions := e.versionsFrom()
	w := e.startWorker("w1", workerOpts{host: wa.HostOptions{Versions: versions}})
	s := e.link(w, userA, "", "")
	next := newer(versions.Current())
	e.emu.SetMinVersion(next)

	got := e.waitSession(s.SessionID, "waiting as client_outdated", func(s store.Session) bool {
		return s.Status == store.StatusReconnecting && store.Str(s.StatusReason) == "client_outdated"
	})
	if got.DeviceJID == nil || store.Str(got.WorkerID) != "w1" {
		t.Fatalf("waiting session lost its device or lease: device=%v worker=%v", got.DeviceJID, got.WorkerID)
	}
	e.emu.SetServedVersion(next)
	e.waitSession(s.SessionID, "connected again", func(s store.Session) bool { return s.Status == store.StatusConnected })
	if st := e.emu.Stats(); st.Pairings != 1 {
		t.Fatalf("pairings = %d, want 1", st.Pairings)
	}
}

// A temporary ban (402 with an expiry): the session shows reason
// temporary_ban and the ban's end, makes no attempt before it (the
// emulator refuses exactly one login), and then connects by itself.
func TestTemporaryBanWaitsThenReconnects(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.startWorker("w1", workerOpts{})
	s := e.link(w, userA, "", "")
	const ban = 4 * time.Second
	e.emu.Ban(*s.DeviceJID, ban, 101)

	banned := e.waitSession(s.SessionID, "waiting out the ban", func(s store.Session) bool {
		return s.Status == store.StatusReconnecting && store.Str(s.StatusReason) == "temporary_ban" && s.BannedUntil != nil
	})
	if left := time.Until(*banned.BannedUntil); left <= 0 || left > ban+time.Second {
		t.Fatalf("banned_until is %s from now, want within (0, %s]", left, ban+time.Second)
	}
	connected := e.waitSession(s.SessionID, "connected after the ban", func(s store.Session) bool {
		return s.Status == store.StatusConnected
	})
	if connected.BannedUntil != nil {
		t.Fatalf("banned_until still set after reconnecting: %v", connected.BannedUntil)
	}
	if rs := e.emu.RefusalStats(); rs.Banned != 1 {
		t.Fatalf("the emulator refused %d logins during the ban, want 1 (no attempts before it ends)", rs.Banned)
	}
	if st := e.emu.Stats(); st.Pairings != 1 {
		t.Fatalf("pairings = %d, want 1", st.Pairings)
	}
}

// A burst of 503s is ridden out with backoff; the session never fails.
func TestServiceUnavailableBurstReconnects(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.startWorker("w1", workerOpts{})
	s := e.link(w, userA, "", "")
	e.emu.RefuseNextLogins(3)
	if _, err := e.emu.Drop(*s.DeviceJID); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.SessionID, "connected after the burst", func(s store.Session) bool {
		return s.Status == store.StatusConnected && store.Str(s.StatusReason) == "reconnected"
	})
	if rs := e.emu.RefusalStats(); rs.Unavailable != 3 {
		t.Fatalf("refused %d logins, want the burst of 3", rs.Unavailable)
	}
}

// serve runs an asynq server for w, as cmd/worker does, so that tasks a
// worker enqueues for another one are carried out.
func (e *env) serve(w *testWorker) {
	e.t.Helper()
	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{
		Concurrency: 4, Queues: w.Queues(), TaskCheckInterval: 100 * time.Millisecond,
		LogLevel: asynq.FatalLevel, ShutdownTimeout: 5 * time.Second,
	})
	if err := srv.Start(w.Mux()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(srv.Shutdown)
}

// One worker's path to WhatsApp goes bad (its proxy refuses every
// connection) while another's is fine: after RELEASE_AFTER without a
// connection the session is released to the other worker and connects
// there, without a scan.
func TestUnreachableSessionMovesToAnotherWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	path := testenv.NewSOCKS5(t, "", "")
	w1 := e.startWorker("w1", workerOpts{releaseAfter: 3 * time.Second,
		host: wa.HostOptions{Proxy: "socks5://" + path.Addr()}})
	w2 := e.startWorker("w2", workerOpts{})
	s := e.link(w1, userA, "", "")
	e.serve(w1)
	e.serve(w2)

	path.Refuse(true)
	e.waitSession(s.SessionID, "reconnecting on w1", func(s store.Session) bool {
		return s.Status == store.StatusReconnecting && store.Str(s.WorkerID) == "w1"
	})
	got := e.waitSession(s.SessionID, "connected on w2", func(s store.Session) bool {
		return s.Status == store.StatusConnected && store.Str(s.WorkerID) == "w2"
	})
	if got.DeviceJID == nil || *got.DeviceJID != *s.DeviceJID {
		t.Fatalf("device changed: %v -> %v", s.DeviceJID, got.DeviceJID)
	}
	if st := e.emu.Stats(); st.Pairings != 1 || st.Conflicts != 0 {
		t.Fatalf("emulator stats %+v, want 1 pairing and no conflicts", st)
	}
	testfactory.EventuallyIn(t, "w1 hosts nothing", waitFor, func() bool { return w1.Hosted() == 0 })
}

// A worker with WA_PROXY pairs and logs in through it, and a session with
// its own (admin-set) proxy is restored through that one by a worker
// without WA_PROXY: the emulator sees the logins arrive from the proxies.
func TestSessionsConnectThroughSOCKS5Proxies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	workerProxy := testenv.NewSOCKS5(t, "", "")
	w1 := e.startWorker("w1", workerOpts{host: wa.HostOptions{Proxy: "socks5://" + workerProxy.Addr()}})
	s := e.link(w1, userA, "", "")
	if from := e.emu.LoginFrom(*s.DeviceJID); !slices.Contains(workerProxy.Onward(), from) {
		t.Fatalf("login came from %q, not from the worker's proxy %v", from, workerProxy.Onward())
	}

	sessionProxy := testenv.NewSOCKS5(t, "ops", "s3cret")
	if _, err := e.st.SetProxy(context.Background(), s.SessionID, "socks5://ops:s3cret@"+sessionProxy.Addr()); err != nil {
		t.Fatal(err)
	}
	w2 := e.startWorker("w2", workerOpts{})
	w1.stop() // hands the session over
	j, _ := tasks.NewRestore(s.SessionID, 0, "test")
	if err := w2.process(t, j); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.SessionID, "connected on w2", func(s store.Session) bool {
		return s.Status == store.StatusConnected && store.Str(s.WorkerID) == "w2"
	})
	if from := e.emu.LoginFrom(*s.DeviceJID); !slices.Contains(sessionProxy.Onward(), from) {
		t.Fatalf("restore logged in from %q, not through the session's proxy %v", from, sessionProxy.Onward())
	}
}

// StreamReplaced means another client logged in with this session's keys.
// With leases, a second client of ours is one whose lease is gone, and its
// writes are fenced; so a replacement seen by the lease holder is a client
// outside the service: the keys are compromised. The session ends failed
// with reason stream_replaced and does not reconnect (two clients would
// take turns replacing each other); the keys are kept for the logout that
// the user's disconnect then sends.
func TestStreamReplacedByForeignClientEndsSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.startWorker("w1", workerOpts{})
	s := e.link(w, userA, "", "")

	db := stdlib.OpenDBFromPool(e.st.Pool())
	defer db.Close()
	host := wa.NewHost(db, waendpoint.Endpoint{Addr: e.emu.Addr(), RootKey: e.emu.PubKey()}, e.log)
	dev, err := host.LoadDevice(context.Background(), *s.DeviceJID)
	if err != nil || dev == nil {
		t.Fatalf("load device: %v", err)
	}
	foreign, err := host.NewClient(dev, e.log, wa.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := foreign.Connect(); err != nil {
		t.Fatal(err)
	}
	defer foreign.Disconnect()

	got := e.waitSession(s.SessionID, "ended as stream_replaced", func(s store.Session) bool {
		return s.Status == store.StatusFailed
	})
	if store.Str(got.StatusReason) != "stream_replaced" || got.DeviceJID == nil || got.WorkerID != nil {
		t.Fatalf("reason=%s device=%v worker=%v", store.Str(got.StatusReason), got.DeviceJID, got.WorkerID)
	}
	testfactory.EventuallyIn(t, "client stopped", waitFor, func() bool { return w.Hosted() == 0 })
	if d, err := e.emu.Device(*s.DeviceJID); err != nil || !d.Connected || d.Conflicts != 1 {
		t.Fatalf("device %+v err %v: want the foreign client connected after one conflict", d, err)
	}
}
