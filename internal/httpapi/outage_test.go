package httpapi_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"wasessions/internal/httpapi"
	"wasessions/internal/ratelimit"
	"wasessions/internal/store"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
	"wasessions/tasks"
)

func TestRedisDownGives503AndRecovers(t *testing.T) {
	t.Parallel()
	rs := testenv.StartRedisServer(t)
	e := newEnv(t, func(s *setup) { s.redisURL = rs.URL(); s.opts.QRWait = time.Second })
	user := newUser()
	tok := e.token(user, false)
	base := e.serve()
	stream := e.openStream(t, base, tok)
	stream.next(10 * time.Second)

	rs.Stop()
	// An open event stream ends (at its next heartbeat) rather than stay
	// silently deaf: pub/sub loses what is published meanwhile.
	testfactory.EventuallyIn(t, "the event stream to end", 30*time.Second, func() bool {
		select {
		case _, open := <-stream.events:
			return !open
		default:
			return false
		}
	})
	// The row is committed before the enqueue: 503 names the session kept.
	r := e.do(req{method: "POST", path: sessionPath, token: tok})
	env := r.wantError(t, http.StatusServiceUnavailable, "redis_unavailable")
	sid, _ := env.Error.Details["sessionId"].(string)
	if sid == "" {
		t.Fatalf("no sessionId in the 503: %s", r.Body)
	}
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	if _, err := e.store.Get(context.Background(), sid); err != nil {
		t.Fatalf("the session was not kept: %v", err)
	}
	if l := e.logs.String(); !strings.Contains(l, `"level":"WARN","msg":"request"`) || !strings.Contains(l, `"error_code":"redis_unavailable","error":"`) {
		t.Fatalf("the 503 was not logged with its cause:\n%s", l)
	}
	e.do(req{method: "GET", path: "/readyz"}).wantError(t, http.StatusServiceUnavailable, "redis_unavailable")
	e.do(req{method: "GET", path: eventsPath, token: tok}).wantError(t, http.StatusServiceUnavailable, "redis_unavailable")
	// Postgres-only reads still work.
	var st sessionJSON
	e.do(req{method: "GET", path: statusPath, token: tok}).data(t, &st)
	if st.SessionID != sid || st.Status != "pending" {
		t.Fatalf("status during the outage: %+v", st)
	}
	// /metrics keeps answering, reporting the queue as unreadable.
	if m := e.do(req{method: "GET", path: "/metrics"}); !contains(m.Body, "wasessions_queue_scrape_up 0") {
		t.Fatalf("metrics during a Redis outage:\n%s", m.Body)
	}

	// Redis returns (empty: it kept no data). The same app recovers.
	rs.Start()
	testfactory.EventuallyIn(t, "readyz to recover", 30*time.Second, func() bool {
		return e.do(req{method: "GET", path: "/readyz"}).Status == http.StatusOK
	})
	e.retryQueuesCreate(t, tok, sid)
}

// retryQueuesCreate: once Redis answers again, the user's retried create
// returns the session the outage answer named (200, the same id) and
// queues the create task the outage lost.
func (e *env) retryQueuesCreate(t *testing.T, tok, sid string) {
	t.Helper()
	var again sessionJSON
	r := e.do(req{method: "POST", path: sessionPath, token: tok})
	r.data(t, &again)
	if r.Status != http.StatusOK || again.SessionID != sid {
		t.Fatalf("retry after the outage: %d %+v", r.Status, again)
	}
	found := false
	for _, ti := range e.pendingTasks(tasks.QueueShared) {
		found = found || ti.ID == tasks.TakeoverID("create:", sid, 0)
	}
	if !found {
		t.Fatal("the retry did not queue the session's create task")
	}
}

func TestPostgresDownGives503AndRecovers(t *testing.T) {
	t.Parallel()
	ps := testenv.StartPostgresServer(t)
	dsn := ps.NewDatabase(t)
	pool, err := store.Connect(context.Background(), dsn, 5)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	testenv.Migrate(t, pool)
	e := newEnv(t, func(s *setup) { s.st = store.New(pool) })
	tok := e.token(newUser(), false)
	r := e.do(req{method: "POST", path: sessionPath, token: tok})
	if r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}

	ps.Stop()
	e.do(req{method: "GET", path: statusPath, token: tok}).wantError(t, http.StatusServiceUnavailable, "database_unavailable")
	e.do(req{method: "POST", path: sessionPath, token: tok}).wantError(t, http.StatusServiceUnavailable, "database_unavailable")
	e.do(req{method: "GET", path: statsPath, token: tok}).wantError(t, http.StatusServiceUnavailable, "database_unavailable")
	e.do(req{method: "GET", path: "/readyz"}).wantError(t, http.StatusServiceUnavailable, "database_unavailable")
	if m := e.do(req{method: "GET", path: "/metrics"}); !contains(m.Body, "wasessions_sessions_scrape_up 0") {
		t.Fatalf("metrics during a Postgres outage:\n%s", m.Body)
	}

	ps.Start()
	testfactory.EventuallyIn(t, "status to recover", 60*time.Second, func() bool {
		return e.do(req{method: "GET", path: statusPath, token: tok}).Status == http.StatusOK
	})
	if r := e.do(req{method: "GET", path: "/readyz"}); r.Status != http.StatusOK {
		t.Fatalf("readyz after recovery: %d %s", r.Status, r.Body)
	}
}

// TestPostgresHangIsBounded: a Postgres that accepts connections and never
// answers holds no request past RequestTimeout (plus the tick requests
// share a deadline in, see deadlines): each answers 503
// database_unavailable, whether it waits on a statement already sent or on
// a new connection, and the API answers again once Postgres does.
func TestPostgresHangIsBounded(t *testing.T) {
	t.Parallel()
	// RequestTimeout 1 s, a tick of 100 ms: 3 s leaves room for a slow
	// machine and is far below what an unbounded request would take (it
	// would wait until the proxy is unhung at the end of the test).
	const timeout, bound = time.Second, 3 * time.Second
	_, dsn := testenv.NewStore(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.NewFaultProxy(t, "postgres", u.Host)
	pool, err := store.Connect(context.Background(), proxy.ProxyPostgresURL(dsn), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e := newEnv(t, func(s *setup) {
		s.st = store.New(pool)
		s.opts.RequestTimeout = timeout
	})
	tok := e.token(newUser(), false)
	if r := e.do(req{method: "POST", path: sessionPath, token: tok}); r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}

	proxy.Hang()
	type answer struct {
		r    response
		took time.Duration
	}
	answers := make([]answer, 6)
	var wg sync.WaitGroup
	for i := range answers {
		// Requests starting in different ticks and in the same one.
		time.Sleep(time.Duration(i%3) * 150 * time.Millisecond)
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			answers[i].r = e.do(req{method: "GET", path: statusPath, token: tok})
			answers[i].took = time.Since(start)
		}()
	}
	wg.Wait()
	for i, a := range answers {
		if a.took > bound || a.took < timeout {
			t.Errorf("request %d: answered %d after %v during a Postgres hang, want after %v and within %v",
				i, a.r.Status, a.took.Round(time.Millisecond), timeout, bound)
		}
		a.r.wantError(t, http.StatusServiceUnavailable, "database_unavailable")
	}

	proxy.Unhang()
	testfactory.EventuallyIn(t, "status to answer again", 30*time.Second, func() bool {
		return e.do(req{method: "GET", path: statusPath, token: tok}).Status == http.StatusOK
	})
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }

// TestRedisHangAnswersPromptly: a Redis that accepts connections and never
// answers (a host gone from the network, a frozen primary) must not hold a
// user's create or send for go-redis's ReadTimeout (5 s) times its
// attempts. With the API's own defaults (RequestTimeout 10 s), each request
// answers what the contract says for an unavailable Redis: the create 503
// redis_unavailable naming the session it recorded (started once Redis is
// back), the send 202 (the message is durable; the reconciler wakes its
// sender), the status 200 (Postgres only), the event stream and readiness
// 503 redis_unavailable. The rate limits fail open, with one warning per
// request. Once Redis answers again, the retried create returns the same
// session and queues its task.
//
// The bound on each answer, 3 s, is not a speed claim: it is below the
// 5 s that go-redis's first ReadTimeout would take, so an answer within it
// shows that the request gave up on its own budget rather than waited for
// the socket's timeout; the budgets themselves are far below it (300 ms
// for the rate-limit check, 1 s for an enqueue or a subscription), which
// leaves room for a loaded machine. The hub's state matters: subscribed
// before the hang, a create gets its listener at once and waits on the
// enqueue; not subscribed, it waits on the subscription.
func TestRedisHangAnswersPromptly(t *testing.T) {
	t.Parallel()
	const bound = 3 * time.Second
	for _, tc := range []struct {
		name      string
		hubBefore bool // the event hub subscribed before the hang
	}{
		{"event hub subscribed before the hang", true},
		{"event hub not subscribed", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rdb := testenv.NewRedisDB(t)
			proxy := testenv.NewFaultProxy(t, "redis", rdb.Addr)
			perMinute := ratelimit.Limit{N: 100, Per: time.Minute}
			e := newEnv(t, func(s *setup) {
				s.redisURL = proxy.ProxyRedisURL(rdb)
				s.opts.QRWait = 2 * time.Second
				s.opts.Limits = httpapi.Limits{Create: perMinute, PairingPhone: perMinute, Send: perMinute}
			})
			ctx := context.Background()

			// A user whose session a worker hosts, linked without the
			// API's create (which would subscribe the hub).
			sender := newUser()
			linked, _, err := e.store.CreateSession(ctx, store.NewSession{UserID: sender, SessionID: "whatsapp_" + sender + "_1", TTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			e.claim(t, linked.SessionID, "w1").connect(t, "15550001234", "Ann")
			if tc.hubBefore {
				l, err := e.deps.Hub.Subscribe(ctx, newUser())
				if err != nil {
					t.Fatal(err)
				}
				l.Close() // the hub's subscription stays
			}

			proxy.Hang()
			timed := func(r req) response {
				t.Helper()
				start := time.Now()
				res := e.do(r)
				took := time.Since(start)
				t.Logf("%s %s: %d after %v", r.method, r.path, res.Status, took.Round(time.Millisecond))
				if took > bound {
					t.Errorf("%s %s answered %d after %v during a Redis hang, want within %v", r.method, r.path, res.Status, took.Round(time.Millisecond), bound)
				}
				return res
			}

			creator := newUser()
			tok := e.token(creator, false)
			r := timed(req{method: "POST", path: sessionPath, token: tok, body: []byte(`{"phoneNumber":"+15551230000"}`)})
			env := r.wantError(t, http.StatusServiceUnavailable, "redis_unavailable")
			sid, _ := env.Error.Details["sessionId"].(string)
			if sid == "" {
				t.Fatalf("no sessionId in the 503: %s", r.Body)
			}
			if s, err := e.store.Get(ctx, sid); err != nil || s.Status != store.StatusPending {
				t.Fatalf("the session was not kept pending: %+v %v", s, err)
			}

			r = timed(req{method: "POST", path: messagesPath, token: e.token(sender, false), body: sendBody("+15557654321", "Hello")})
			if r.Status != http.StatusAccepted {
				t.Fatalf("send during the hang: %d %s", r.Status, r.Body)
			}

			var st sessionJSON
			timed(req{method: "GET", path: statusPath, token: tok}).data(t, &st)
			if st.SessionID != sid || st.Status != "pending" {
				t.Fatalf("status during the hang: %+v", st)
			}
			if !tc.hubBefore {
				// (Subscribed, the hub learns of the hang only from its
				// probe; a stream opened meanwhile is served from
				// Postgres and ends when the hub gives up.)
				timed(req{method: "GET", path: eventsPath, token: e.token(newUser(), false)}).wantError(t, http.StatusServiceUnavailable, "redis_unavailable")
			}
			timed(req{method: "GET", path: "/readyz"}).wantError(t, http.StatusServiceUnavailable, "redis_unavailable")
			// The operators' workers view reads asynq's inspector, which
			// takes no context: without a guard it waited go-redis's 5 s
			// per attempt.
			timed(req{method: "GET", path: adminWorkersPath, token: e.token(newUser(), true)}).wantError(t, http.StatusServiceUnavailable, "redis_unavailable")

			// One warning per request whose limits went unchecked: the
			// create (two limits) and the send.
			if n := strings.Count(e.logs.String(), `"msg":"rate limit not checked`); n != 2 {
				t.Errorf("%d rate-limit warnings for two requests:\n%s", n, e.logs.String())
			}

			proxy.Unhang()
			testfactory.EventuallyIn(t, "readyz to recover", 30*time.Second, func() bool {
				return e.do(req{method: "GET", path: "/readyz"}).Status == http.StatusOK
			})
			e.retryQueuesCreate(t, tok, sid)
		})
	}
}
