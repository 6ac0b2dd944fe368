package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"wasessions/internal/events"
	"wasessions/internal/queue"
	"wasessions/internal/reconcile"
	"wasessions/internal/store"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
	"wasessions/internal/worker"
	"wasessions/tasks"
)

// cluster is two workers with asynq servers whose Postgres connections
// (session rows and whatsmeow's keys alike) go through one FaultProxy, and
// a reconciler that runs every 500 ms as the scheduler would, on a direct
// connection.
type cluster struct {
	e       *env
	pg      *testenv.FaultProxy // with newCluster
	redis   *testenv.FaultProxy // with clusterOpts.proxyRedis
	workers map[string]*testWorker
	linked  map[string]string // session id -> device jid
	pairs   int64             // pairings the test made
}

func newCluster(t *testing.T, ids ...string) *cluster {
	return newClusterWith(t, clusterOpts{}, ids...)
}

// clusterOpts choose which store the cluster's FaultProxy sits in front of.
type clusterOpts struct {
	// proxyRedis puts Redis behind the proxy (c.redis) instead of
	// Postgres: the workers' asynq servers, their enqueues and events, and
	// the reconciler's enqueues all go through it, as every program's
	// would in a Redis outage. Postgres is then reached directly.
	proxyRedis bool
	// setup runs on each worker before it starts (test hooks), with its id.
	setup func(id string, w *worker.Worker)
}

func newClusterWith(t *testing.T, o clusterOpts, ids ...string) *cluster {
	e := newEnv(t)
	c := &cluster{e: e, workers: map[string]*testWorker{}, linked: map[string]string{}}
	// A login right after pairing uploads prekeys first, which on a busy
	// machine (two race-instrumented workers) can take a while.
	wo := workerOpts{serve: true, connectTimeout: time.Minute}
	enq, bus := e.enq, e.bus
	if o.proxyRedis {
		c.redis = testenv.NewFaultProxy(t, "redis", e.rdbDB.Addr)
		wo.redis = c.redis.ProxyRedis(e.rdbDB)
		enq, bus = queue.New(wo.redis), events.NewBus(wo.redis)
	} else {
		proxied, pg := e.proxiedStore(10)
		c.pg = pg
		wo.pool, wo.waPool = proxied, proxied
	}
	for _, id := range ids {
		wo := wo
		if o.setup != nil {
			wo.setup = func(w *worker.Worker) { o.setup(id, w) }
		}
		c.workers[id] = e.startWorker(id, wo)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_, _ = reconcile.Run(ctx, reconcile.Deps{Store: e.st, Enqueuer: enq, Bus: bus, Log: e.log})
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

// pairing creates a session and waits for its QR (through asynq).
func (c *cluster) pairing(user string) store.Session {
	c.e.t.Helper()
	s := c.e.newSession(user)
	j, _ := tasks.NewCreate(s.SessionID, 0, "test")
	if _, err := c.e.enq.Enqueue(context.Background(), j, false); err != nil {
		c.e.t.Fatal(err)
	}
	return c.e.waitSession(s.SessionID, "showed a QR", func(s store.Session) bool { return s.QRRaw != nil })
}

// link pairs a session and waits until it is connected.
func (c *cluster) link(user string) store.Session {
	c.e.t.Helper()
	s := c.pairing(user)
	jid, err := c.e.emu.Scan(context.Background(), *s.QRRaw, "", "")
	if err != nil {
		c.e.t.Fatal(err)
	}
	c.pairs++
	c.linked[s.SessionID] = jid
	return c.e.waitSession(s.SessionID, "connected", func(s store.Session) bool { return s.Status == store.StatusConnected })
}

// waitConsistent waits, up to three times waitFor, until consistent
// reports nothing, and fails the test with what it reported last.
func (c *cluster) waitConsistent() {
	c.e.t.Helper()
	testfactory.WaitFor(c.e.t, "every linked session back with its one client", 3*waitFor, func() (bool, string) {
		why := c.consistent()
		return why == "", why
	})
}

// consistent reports the first way the linked sessions are not all
// connected, each by exactly the client its row names, or "".
func (c *cluster) consistent() string {
	for sid, jid := range c.linked {
		s, err := c.e.st.Get(context.Background(), sid)
		if err != nil {
			return err.Error()
		}
		if s.Status != store.StatusConnected || store.Str(s.DeviceJID) != jid {
			return fmt.Sprintf("%s: status %s reason %s device %s", sid, s.Status, store.Str(s.StatusReason), store.Str(s.DeviceJID))
		}
		hosts := 0
		for id, w := range c.workers {
			cli := worker.Client(w.Worker, sid)
			if cli == nil {
				continue
			}
			hosts++
			if id != store.Str(s.WorkerID) || !cli.IsLoggedIn() {
				return fmt.Sprintf("%s: row says worker %s, client on %s logged in=%v", sid, store.Str(s.WorkerID), id, cli.IsLoggedIn())
			}
		}
		if hosts != 1 {
			return fmt.Sprintf("%s: hosted by %d workers", sid, hosts)
		}
		if d, err := c.e.emu.Device(jid); err != nil || !d.Connected {
			return fmt.Sprintf("%s: device connected=%v (%v)", sid, d.Connected, err)
		}
	}
	return ""
}

// outageRun links sessions on two workers, leaves one showing a QR, and
// then, while Postgres is broken by fault for as long as it lasts, hands
// one session to the other worker (a rebalance): afterwards every linked
// session is connected by the one client its row names, none was paired
// again, the emulator saw no conflict, and the pairing session shows a QR.
func outageRun(t *testing.T, fault string, d time.Duration) {
	c := newCluster(t, "w1", "w2")
	for i := range 3 {
		c.link(fmt.Sprintf("%08d-1111-4111-8111-111111111111", i))
	}
	p := c.pairing("99999999-1111-4111-8111-111111111111")

	var handed string
	for sid := range c.linked {
		handed = sid
		break
	}
	from := store.Str(c.e.waitSession(handed, "hosted", func(s store.Session) bool { return s.WorkerID != nil }).WorkerID)
	to := "w1"
	if from == "w1" {
		to = "w2"
	}
	start := time.Now()
	switch fault {
	case "down":
		c.pg.Down()
	case "hang":
		c.pg.Hang()
	}
	h, _ := tasks.NewHandoff(handed, from, to)
	if _, err := c.e.enq.Enqueue(context.Background(), h, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(d)
	switch fault {
	case "down":
		c.pg.Up()
	case "hang":
		c.pg.Unhang()
	}
	t.Logf("Postgres %s for %s", fault, time.Since(start).Round(time.Millisecond))

	recovered := time.Now()
	c.waitConsistent()
	t.Logf("FIGURE postgres-%s-%s all %d linked sessions connected and consistent %s after Postgres returned", fault, d,
		len(c.linked), time.Since(recovered).Round(time.Millisecond))
	c.e.waitSession(p.SessionID, "showing a QR again", func(s store.Session) bool {
		return s.Status == store.StatusQR && s.QRRaw != nil && s.WorkerID != nil
	})
	if st := c.e.emu.Stats(); st.Pairings != c.pairs || st.Conflicts != 0 {
		t.Fatalf("emulator stats %+v; want %d pairings, 0 conflicts", st, c.pairs)
	}
}

// Postgres unreachable (connections refused) for 5 s, longer than the
// lease: the workers fence their clients, the reconciler restores them.
func TestPostgresOutage5s(t *testing.T) {
	t.Parallel()
	outageRun(t, "down", 5*time.Second)
}

// Postgres hanging (Toxiproxy timeout toxic: no answer, no refusal) for
// 5 s.
func TestPostgresHangs(t *testing.T) {
	t.Parallel()
	outageRun(t, "hang", 5*time.Second)
}
