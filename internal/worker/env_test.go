package worker_test

import (
	"context"
	"fmt"
	dto "github.com/prometheus/client_model/go"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"wasessions/internal/events"
	"wasessions/internal/queue"
	"wasessions/internal/store"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
	"wasessions/internal/wa"
	"wasessions/internal/waemu"
	"wasessions/internal/waendpoint"
	"wasessions/internal/worker"
	"wasessions/tasks"
)

// emuSeed is the key seed of every emulator in this test process: whatsmeow
// trusts one root key per process.
var emuSeed = []byte("worker tests: one emulator root key per process")

const (
	leaseTTL = 3 * time.Second
	waitFor  = 30 * time.Second
)

func TestMain(m *testing.M) {
	os.Exit(m.Run())
}

// proxiedStore is a Store on the env's database whose connections go
// through a Toxiproxy proxy the test can break.
func (e *env) proxiedStore(maxConns int) (*store.Store, *testenv.FaultProxy) {
	e.t.Helper()
	u, err := url.Parse(e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	p := testenv.NewFaultProxy(e.t, "postgres", u.Host)
	pool, err := store.Connect(context.Background(), p.ProxyPostgresURL(e.dsn), maxConns)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(pool.Close)
	return store.New(pool), p
}

// leaseStore is a small pool of its own on the env's database, for a
// worker's heartbeat (worker.Deps.Leases), as cmd/worker has.
func (e *env) leaseStore() *store.Store {
	e.t.Helper()
	pool, err := store.Connect(context.Background(), e.dsn, 2)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(pool.Close)
	return store.New(pool)
}

// env is one test's world: its own database, Redis DB and emulator.
type env struct {
	t     *testing.T
	st    *store.Store
	rdb   redis.UniversalClient
	rdbDB testenv.RedisDB // the reserved database rdb is on
	enq   *queue.Enqueuer
	bus   *events.Bus
	emu   *waemu.Server
	log   *slog.Logger
	dsn   string
	// patience is how long waitSession waits (default waitFor).
	patience time.Duration
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, dsn := testenv.NewStore(t)
	r := testenv.NewRedisDB(t)
	rdb := redis.NewClient(r.Options())
	t.Cleanup(func() { rdb.Close() })
	emu, err := waemu.Start(context.Background(), waemu.Options{ListenAddr: "127.0.0.1:0", KeySeed: emuSeed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	return &env{
		t: t, st: st, rdb: rdb, rdbDB: r, enq: queue.New(rdb), bus: events.NewBus(rdb), emu: emu, dsn: dsn,
		log: slog.New(slog.NewJSONHandler(&testLog{t: t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
}

// testLog forwards logs to t.Log while the test runs.
type testLog struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done && testing.Verbose() {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// workerOpts tweaks a test worker.
type workerOpts struct {
	endpoint    *waendpoint.Endpoint
	maxSessions int
	pool        *store.Store // another Store (e.g. on a private Postgres)
	host        wa.HostOptions
	// releaseAfter and retryMax shorten the recovery clocks (defaults 1m, 2s).
	releaseAfter, retryMax time.Duration
	// waPool, when set, is where whatsmeow keeps device keys (default:
	// the same pool as the sessions), e.g. to break only the worker's own
	// session writes.
	waPool *store.Store
	// leases is where the heartbeat runs (worker.Deps.Leases). Default:
	// pool when set (the same network path), else a small pool of its
	// own on the env's database, as cmd/worker has.
	leases   *store.Store
	leaseTTL time.Duration
	// connectTimeout overrides the 15 s wait for a login after pairing.
	connectTimeout time.Duration
	// serve runs an asynq server for the worker on the env's Redis, as
	// cmd/worker does.
	serve bool
	// setup runs on the worker before its lease loop starts (test hooks).
	setup func(*worker.Worker)
	// redis, when set, is the worker's Redis (enqueues, events, its asynq
	// server) instead of the env's, e.g. a client through a FaultProxy.
	redis redis.UniversalClient
}

// startWorker builds a worker on the env's stores and emulator, runs its
// lease loop, and shuts it down (handing sessions over) at test end unless
// the test stopped it already.
func (e *env) startWorker(id string, o workerOpts) *testWorker {
	e.t.Helper()
	st := e.st
	if o.pool != nil {
		st = o.pool
	}
	ep := waendpoint.Endpoint{Addr: e.emu.Addr(), RootKey: e.emu.PubKey()}
	if o.endpoint != nil {
		ep = *o.endpoint
	}
	if o.maxSessions == 0 {
		o.maxSessions = 100
	}
	if o.releaseAfter == 0 {
		o.releaseAfter = time.Minute
	}
	if o.retryMax == 0 {
		o.retryMax = 2 * time.Second
	}
	waPool := st
	if o.waPool != nil {
		waPool = o.waPool
	}
	if o.connectTimeout == 0 {
		o.connectTimeout = 15 * time.Second
	}
	if o.leaseTTL == 0 {
		o.leaseTTL = leaseTTL
	}
	leases := o.leases
	switch {
	case leases != nil:
	case o.pool != nil:
		leases = o.pool
	default:
		leases = e.leaseStore()
	}
	rdb, enq, bus := e.rdb, e.enq, e.bus
	if o.redis != nil {
		rdb, enq, bus = o.redis, queue.New(o.redis), events.NewBus(o.redis)
	}
	db := stdlib.OpenDBFromPool(waPool.Pool())
	e.t.Cleanup(func() { db.Close() })
	log := e.log.With("worker_id", id)
	reg := prometheus.NewRegistry()
	w, err := worker.New(worker.Config{
		WorkerID: id, LeaseTTL: o.leaseTTL, SessionTTL: time.Hour, MaxSessions: o.maxSessions,
		RestoreConcurrency: 4, ConnectTimeout: o.connectTimeout, ReleaseAfter: o.releaseAfter, RetryMax: o.retryMax,
	}, worker.Deps{
		Store: st, Leases: leases, Enqueuer: enq, Bus: bus, Host: wa.NewHostWith(db, ep, log, o.host),
		Metrics: worker.NewMetrics(reg), Log: log,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if o.setup != nil {
		o.setup(w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	tw := &testWorker{Worker: w, id: id, cancel: cancel, done: done, reg: reg}
	if o.serve {
		tw.srv = asynq.NewServerFromRedisClient(rdb, asynq.Config{
			Concurrency: 8, Queues: w.Queues(), TaskCheckInterval: 200 * time.Millisecond,
			ShutdownTimeout: 20 * time.Second, LogLevel: asynq.FatalLevel, RetryDelayFunc: worker.RetryDelay,
		})
		if err := tw.srv.Start(w.Mux()); err != nil {
			e.t.Fatal(err)
		}
	}
	e.t.Cleanup(tw.stop)
	return tw
}

type testWorker struct {
	*worker.Worker
	reg    *prometheus.Registry // its metrics
	id     string
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	srv    *asynq.Server // with workerOpts.serve
	// shutdownTook is how long Worker.Shutdown took in stop.
	shutdownTook time.Duration
}

// stop hands sessions over (graceful shutdown) and ends the lease loop, in
// cmd/worker's order when an asynq server runs.
func (w *testWorker) stop() {
	w.once.Do(func() {
		if w.srv != nil {
			w.srv.Stop()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		start := time.Now()
		w.Shutdown(ctx)
		w.shutdownTook = time.Since(start)
		w.cancel()
		<-w.done
		if w.srv != nil {
			w.srv.Shutdown()
		}
	})
}

// histogramCount is how many observations the worker's histogram name
// holds for the label kind=value.
func (w *testWorker) histogramCount(t *testing.T, name, label, value string) uint64 {
	t.Helper()
	return w.metric(t, name, label, value).GetHistogram().GetSampleCount()
}

// counterValue is the value of the worker's counter name for the label
// kind=value (0 when it has no such series).
func (w *testWorker) counterValue(t *testing.T, name, label, value string) float64 {
	t.Helper()
	return w.metric(t, name, label, value).GetCounter().GetValue()
}

// metric is the worker's series of metric name with the label kind=value,
// nil when it has none (its getters then answer zero).
func (w *testWorker) metric(t *testing.T, name, label, value string) *dto.Metric {
	t.Helper()
	mfs, err := w.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m
				}
			}
		}
	}
	return nil
}

// process runs a task through the worker's mux, as asynq would.
func (w *testWorker) process(t *testing.T, j tasks.Job) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return w.Mux().ProcessTask(ctx, j.Task)
}

// newSession inserts a pending session for a fresh user.
func (e *env) newSession(userID string) store.Session {
	e.t.Helper()
	s, created, err := e.st.CreateSession(context.Background(), store.NewSession{
		UserID: userID, SessionID: fmt.Sprintf("whatsapp_%s_%d", userID, time.Now().UnixNano()), TTL: time.Hour,
	})
	if err != nil || !created {
		e.t.Fatalf("create session: created=%v err=%v", created, err)
	}
	return s
}

// waitSession polls the row until cond holds.
func (e *env) waitSession(id string, what string, cond func(store.Session) bool) store.Session {
	e.t.Helper()
	patience := e.patience
	if patience == 0 {
		patience = waitFor
	}
	var last store.Session
	testfactory.WaitFor(e.t, "session "+id+" "+what, patience, func() (bool, string) {
		s, err := e.st.Get(context.Background(), id)
		if err != nil {
			return false, err.Error()
		}
		last = s
		return cond(s), fmt.Sprintf("status=%s reason=%s err=%s worker=%s",
			s.Status, store.Str(s.StatusReason), store.Str(s.LastError), store.Str(s.WorkerID))
	})
	return last
}

// link creates a session, hosts it on w, scans its QR with the emulator
// and waits until it is connected.
func (e *env) link(w *testWorker, userID, phone, name string) store.Session {
	e.t.Helper()
	s := e.newSession(userID)
	j, _ := tasks.NewCreate(s.SessionID, 0, "test")
	if err := w.process(e.t, j); err != nil {
		e.t.Fatalf("create: %v", err)
	}
	s = e.waitSession(s.SessionID, "showed a QR", func(s store.Session) bool { return s.QRRaw != nil })
	if _, err := e.emu.Scan(context.Background(), *s.QRRaw, phone, name); err != nil {
		e.t.Fatalf("scan: %v", err)
	}
	return e.waitSession(s.SessionID, "connected", func(s store.Session) bool { return s.Status == store.StatusConnected })
}

func (e *env) deviceKeys(jid string) bool {
	e.t.Helper()
	ok, err := e.st.DeviceExists(context.Background(), jid)
	if err != nil {
		e.t.Fatal(err)
	}
	return ok
}

func (e *env) inspector() *asynq.Inspector { return asynq.NewInspectorFromRedisClient(e.rdb) }

var _ = io.Discard
