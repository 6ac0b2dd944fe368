package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

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
	r = e.do(req{method: "POST", path: sessionPath, token: tok})
	var again sessionJSON
	r.data(t, &again)
	if r.Status != http.StatusOK || again.SessionID != sid {
		t.Fatalf("retry after the outage: %d %+v", r.Status, again)
	}
	// The retry queued the create task the outage had lost.
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

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }
