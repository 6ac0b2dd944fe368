package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"wasessions/internal/netguard"
	"wasessions/internal/queue"
	"wasessions/internal/store"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
	"wasessions/tasks"
)

// env is one test's real Postgres database, Redis database, asynq server
// on the webhooks queue and delivery service.
type env struct {
	t      testing.TB
	ctx    context.Context
	st     *store.Store
	rdb    *redis.Client
	sealer *Sealer
	svc    *Service
	guard  netguard.Guard
}

type envOpts struct {
	Options
	concurrency int
	guard       *netguard.Guard
	// stopped: the delivery service is built but not started (e.Start).
	stopped bool
	// redis and pg, when set, are private servers the test may restart
	// (never the shared ones): Redis database 0 of redis, a new database
	// on pg.
	redis *testenv.RedisServer
	pg    *testenv.PostgresServer
}

func testLog(testing.TB) *slog.Logger {
	if os.Getenv("WEBHOOK_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	var st *store.Store
	if o.pg != nil {
		pool, err := store.Connect(context.Background(), o.pg.NewDatabase(t), 20)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		testenv.Migrate(t, pool)
		st = store.New(pool)
	} else {
		st, _ = testenv.NewStore(t)
	}
	var ropts *redis.Options
	if o.redis != nil {
		ropts = &redis.Options{Addr: o.redis.Addr}
	} else {
		ropts = testenv.NewRedisDB(t).Options()
	}
	rdb := redis.NewClient(ropts)
	t.Cleanup(func() { rdb.Close() })
	sealer, err := NewSealer("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	if err != nil {
		t.Fatal(err)
	}
	if o.concurrency == 0 {
		o.concurrency = 16
	}
	if o.PollInterval == 0 {
		o.PollInterval = 100 * time.Millisecond
	}
	guard := netguard.Guard{AllowHTTP: true, AllowPrivate: true}
	if o.guard != nil {
		guard = *o.guard
	}
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: o.concurrency, Queues: map[string]int{tasks.QueueWebhooks: 1},
		TaskCheckInterval: 20 * time.Millisecond, LogLevel: asynq.FatalLevel, ShutdownTimeout: 2 * time.Second,
	})
	svc := NewService(o.Options, ServiceDeps{Store: st, Enqueuer: queue.New(rdb), Sealer: sealer, Guard: guard,
		Log: testLog(t), Server: srv})
	e := &env{t: t, ctx: context.Background(), st: st, rdb: rdb, sealer: sealer, svc: svc, guard: guard}
	if !o.stopped {
		e.Start()
	}
	return e
}

// Start starts the delivery service until the test ends.
func (e *env) Start() {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if err := e.svc.Start(ctx); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cancel(); e.svc.Stop() })
}

// endpoint registers an endpoint for userID (scope "all" when all) and
// returns it with its secret in the clear.
func (e *env) endpoint(userID, url string, all bool, events ...string) (store.WebhookEndpoint, string) {
	e.t.Helper()
	secret, err := NewSecret()
	if err != nil {
		e.t.Fatal(err)
	}
	sealed, err := e.sealer.Seal(secret)
	if err != nil {
		e.t.Fatal(err)
	}
	if len(events) == 0 {
		events = store.WebhookEventTypes()
	}
	scope := store.WebhookScopeUser
	if all {
		scope = store.WebhookScopeAll
	}
	ep, err := e.st.CreateWebhookEndpoint(e.ctx, store.NewWebhookEndpoint{UserID: userID, Scope: scope, URL: url,
		Events: events, Secret: sealed}, 10)
	if err != nil {
		e.t.Fatal(err)
	}
	return ep, secret
}

var sessionN atomic.Int64

// session creates a user with a pending session (one session.status
// event) and returns the user id and session id.
func (e *env) session() (userID, sessionID string) {
	e.t.Helper()
	userID = uuid.NewString()
	sessionID = fmt.Sprintf("whatsapp_%s_%d", userID, sessionN.Add(1))
	if _, _, err := e.st.CreateSession(e.ctx, store.NewSession{UserID: userID, SessionID: sessionID, TTL: time.Hour}); err != nil {
		e.t.Fatal(err)
	}
	return userID, sessionID
}

var waN atomic.Int64

// inbound stores a received text (one message.received event).
func (e *env) inbound(userID, sessionID string) {
	e.t.Helper()
	if _, _, err := e.st.SaveInbound(e.ctx, store.Inbound{SessionID: sessionID, UserID: userID, Chat: "+15550001",
		Text: "hello", WAMessageID: fmt.Sprintf("3EB0%012d", waN.Add(1)), Timestamp: time.Now()}); err != nil {
		e.t.Fatal(err)
	}
}

// eventsOf lists the ids of a session's events in sequence order.
func (e *env) eventsOf(sessionID string) []string {
	e.t.Helper()
	rows, err := e.st.Pool().Query(e.ctx, `SELECT id::text FROM webhook_events WHERE session_id = $1 ORDER BY sequence`, sessionID)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, id)
	}
	return out
}

// delivery is one request a receiver accepted.
type delivery struct {
	ID      string
	Payload Payload
	Raw     []byte
	At      time.Time // when the receiver accepted it
}

// receiver is a real HTTP server on loopback that checks every request
// with the Standard Webhooks library (not our signing code), and accepts
// each webhook-id once (a repeated id is answered 200 and counted).
type receiver struct {
	t       testing.TB
	srv     *httptest.Server
	mu      sync.Mutex
	secrets []string
	got     []delivery
	seen    map[string]bool
	arrived []string        // the id of every verified request, repeats included
	refuse  map[string]bool // ids answered 500
	repeats int
	bad     []string
	down    atomic.Bool
	status  atomic.Int32 // answer when not 2xx wanted; 0: 204
	hold    chan struct{}
	holding atomic.Int32
	slow    atomic.Int64 // nanoseconds each request takes before its answer
}

func newReceiver(t testing.TB, secrets ...string) *receiver {
	r := &receiver{t: t, secrets: secrets, seen: map[string]bool{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) URL() string { return r.srv.URL + "/hook" }

// setSecrets changes the secrets a request must verify with (each one).
func (r *receiver) setSecrets(s ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secrets = s
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	time.Sleep(time.Duration(r.slow.Load()))
	if r.hold != nil {
		r.holding.Add(1)
		<-r.hold
	}
	if r.down.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if s := r.status.Load(); s != 0 {
		w.WriteHeader(int(s))
		return
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, sec := range r.secrets {
		wh, err := standardwebhooks.NewWebhook(sec)
		if err != nil {
			r.t.Errorf("receiver secret: %v", err)
			return
		}
		if err := wh.Verify(body, req.Header); err != nil {
			r.bad = append(r.bad, err.Error())
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
	}
	id := req.Header.Get("webhook-id")
	if r.refuse[id] {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	r.arrived = append(r.arrived, id)
	if r.seen[id] {
		r.repeats++
		w.WriteHeader(http.StatusOK)
		return
	}
	var p Payload
	if err := json.Unmarshal(body, &p); err != nil {
		r.bad = append(r.bad, "payload: "+err.Error())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.seen[id] = true
	r.got = append(r.got, delivery{ID: id, Payload: p, Raw: body, At: time.Now()})
	w.WriteHeader(http.StatusNoContent)
}

// refuseID makes the receiver answer 500 to id (or accept it again).
func (r *receiver) refuseID(id string, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refuse == nil {
		r.refuse = map[string]bool{}
	}
	r.refuse[id] = on
}

// arrivals lists the id of every verified request it accepted, in order,
// repeats included.
func (r *receiver) arrivals() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.arrived...)
}

func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func (r *receiver) failures() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bad...)
}

// waitFor waits until the receiver accepted n events.
func (r *receiver) waitFor(n int, within time.Duration) {
	r.t.Helper()
	testfactory.WaitFor(r.t, fmt.Sprintf("the receiver to accept %d events", n), within, func() (bool, string) {
		return r.count() >= n, fmt.Sprintf("accepted %d (rejected: %v)", r.count(), r.failures())
	})
}

// checkOrder fails unless, per session, the accepted events are exactly
// the session's events (want) in sequence order.
func checkOrder(t testing.TB, got []delivery, want map[string][]string) {
	t.Helper()
	per := map[string][]delivery{}
	for _, d := range got {
		per[d.Payload.SessionID] = append(per[d.Payload.SessionID], d)
	}
	for sid, ids := range want {
		ds := per[sid]
		if len(ds) != len(ids) {
			t.Fatalf("session %s: %d events accepted, want %d", sid, len(ds), len(ids))
		}
		for i, d := range ds {
			if d.ID != ids[i] || d.Payload.ID != ids[i] {
				t.Fatalf("session %s: event %d is %s (sequence %d), want %s", sid, i, d.ID, d.Payload.Sequence, ids[i])
			}
			if i > 0 && d.Payload.Sequence <= ds[i-1].Payload.Sequence {
				t.Fatalf("session %s: sequence %d after %d", sid, d.Payload.Sequence, ds[i-1].Payload.Sequence)
			}
		}
	}
	if len(per) != len(want) {
		t.Fatalf("events of %d sessions accepted, want %d", len(per), len(want))
	}
}
