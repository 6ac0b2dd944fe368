package worker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"wasessions/internal/queue"
	"wasessions/internal/store"
	"wasessions/internal/testenv"
	"wasessions/internal/worker"
	"wasessions/tasks"
)

// redisOutageRun breaks Redis (refused or hanging, by fault) between two
// workers, the reconciler and Redis for at least d, after linking sessions
// with the link intact. During the outage a session showing a QR is
// scanned (pairing needs Postgres and WhatsApp, not Redis), and the worker
// hosting the most sessions is shut down (SIGTERM's handoff), so every
// takeover task it enqueues fails. Once Redis is back: every session that
// was linked is connected, by the one client its row names; none was
// paired again; the emulator saw no conflict; and the released sessions
// were picked up by the reconciler (their takeovers never reached Redis).
func redisOutageRun(t *testing.T, fault string, d time.Duration) {
	var (
		mu        sync.Mutex
		takeovers = map[string]error{} // session id -> its takeover enqueue's error
	)
	c := newClusterWith(t, clusterOpts{proxyRedis: true, setup: func(_ string, w *worker.Worker) {
		worker.SetTakeoverEnqueued(w, func(sid string, _ queue.Result, err error) {
			mu.Lock()
			defer mu.Unlock()
			takeovers[sid] = err
		})
	}}, "w1", "w2")
	// Linking on a loaded machine (two race-instrumented workers, other
	// test packages) can be slow; no fault is injected until it is done.
	c.e.patience = 2 * time.Minute
	for i := range 4 {
		c.link(fmt.Sprintf("%08d-2222-4222-8222-222222222222", i))
	}
	p := c.pairing("99999999-2222-4222-8222-222222222222")

	start := time.Now()
	switch fault {
	case "down":
		c.redis.Down()
	case "hang":
		c.redis.Hang()
	}

	// Pairing during the outage.
	jid, err := c.e.emu.Scan(context.Background(), *p.QRRaw, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c.pairs++
	c.linked[p.SessionID] = jid
	c.e.waitSession(p.SessionID, "connected after a scan during the outage", func(s store.Session) bool {
		return s.Status == store.StatusConnected
	})

	// A handoff during the outage: the busier worker shuts down.
	victim, hosted := "", map[string]bool{}
	for id, w := range c.workers {
		here := map[string]bool{}
		for sid := range c.linked {
			if worker.Client(w.Worker, sid) != nil {
				here[sid] = true
			}
		}
		if victim == "" || len(here) > len(hosted) {
			victim, hosted = id, here
		}
	}
	shutdown := time.Now()
	c.workers[victim].stop()
	t.Logf("FIGURE redis-%s-%s SIGTERM of %s with %d sessions: Worker.Shutdown %s (budget 20s), with the asynq server's stop %s",
		fault, d, victim, len(hosted), c.workers[victim].shutdownTook.Round(time.Millisecond), time.Since(shutdown).Round(time.Millisecond))
	delete(c.workers, victim)
	mu.Lock()
	for sid := range hosted {
		err, ok := takeovers[sid]
		switch {
		case !ok:
			t.Errorf("session %s: %s released it without enqueueing a takeover", sid, victim)
		case err == nil:
			t.Errorf("session %s: takeover enqueued although Redis was %s", sid, fault)
		}
	}
	mu.Unlock()
	for sid := range hosted {
		s, err := c.e.st.Get(context.Background(), sid)
		if err != nil {
			t.Fatal(err)
		}
		if s.WorkerID != nil || s.Status != store.StatusReconnecting || store.Str(s.DeviceJID) != c.linked[sid] {
			t.Fatalf("session %s after the handoff: worker %s status %s device %s; want released, reconnecting, device kept",
				sid, store.Str(s.WorkerID), s.Status, store.Str(s.DeviceJID))
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	time.Sleep(time.Until(start.Add(d)))
	switch fault {
	case "down":
		c.redis.Up()
	case "hang":
		c.redis.Unhang()
	}
	t.Logf("Redis %s for %s", fault, time.Since(start).Round(time.Millisecond))

	back := time.Now()
	c.waitConsistent()
	t.Logf("FIGURE redis-%s-%s all %d linked sessions connected %s after Redis returned (%d handed off during the outage)",
		fault, d, len(c.linked), time.Since(back).Round(time.Millisecond), len(hosted))
	if st := c.e.emu.Stats(); st.Pairings != c.pairs || st.Conflicts != 0 {
		t.Fatalf("emulator stats %+v; want %d pairings, 0 conflicts", st, c.pairs)
	}
}

// Redis refusing connections for 5 s while a session pairs and a worker
// hands its sessions off.
func TestRedisOutage5s(t *testing.T) {
	t.Parallel()
	redisOutageRun(t, "down", 5*time.Second)
}

// Redis hanging (Toxiproxy timeout toxic: no answer, no refusal) for 5 s
// while a session pairs and a worker hands its sessions off.
func TestRedisHangs(t *testing.T) {
	t.Parallel()
	redisOutageRun(t, "hang", 5*time.Second)
}

// A SIGTERM while Redis hangs still hands every session over: each is
// released in Postgres (another worker takes it as soon as Redis is back
// and the reconciler or its takeover task says so), none is merely
// abandoned at Shutdown's deadline with its lease left to lapse. More
// sessions than Shutdown hands over at once (16) are hosted, so a release
// that waits on Redis shows up as sessions left over at the deadline.
func TestShutdownHandsOffEverySessionWhenRedisHangs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.patience = 2 * time.Minute
	rp := testenv.NewFaultProxy(t, "redis", e.rdbDB.Addr)
	w := e.startWorker("w1", workerOpts{redis: rp.ProxyRedis(e.rdbDB)})
	const n = 40
	ids := make(chan string, n)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := i; j < n; j += 8 {
				s := e.newSession(fmt.Sprintf("%08d-3333-4333-8333-333333333333", j))
				job, _ := tasks.NewCreate(s.SessionID, 0, "test")
				if err := w.Mux().ProcessTask(context.Background(), job.Task); err != nil {
					t.Errorf("create %s: %v", s.SessionID, err)
				}
				ids <- s.SessionID
			}
		}()
	}
	wg.Wait()
	close(ids)
	if t.Failed() {
		t.FailNow()
	}
	for sid := range ids {
		e.waitSession(sid, "showing a QR", func(s store.Session) bool { return s.QRRaw != nil && s.WorkerID != nil })
	}
	if got := w.Hosted(); got != n {
		t.Fatalf("hosting %d sessions, want %d", got, n)
	}

	rp.Hang()
	defer rp.Unhang()
	const budget = 20 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	start := time.Now()
	w.Shutdown(ctx)
	cancel()
	t.Logf("FIGURE redis-hang Shutdown of %d pairing sessions returned after %s (budget %s)", n,
		time.Since(start).Round(time.Millisecond), budget)

	still, err := e.st.OwnedBy(context.Background(), "w1")
	if err != nil {
		t.Fatal(err)
	}
	if len(still) > 0 {
		t.Fatalf("%d of %d sessions were not handed over (still leased to the stopped worker, waiting for the lease to lapse); first: %s",
			len(still), n, still[0].SessionID)
	}
}
