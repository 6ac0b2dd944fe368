package apimetrics_test

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"wasessions/internal/apimetrics"
	"wasessions/internal/store"
	"wasessions/internal/testenv"
)

type fakeCounter struct {
	counts map[store.Status]int64
	err    error
}

func (f fakeCounter) CountByStatus(context.Context) (map[store.Status]int64, error) {
	return f.counts, f.err
}

func scrape(t *testing.T, m *apimetrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func mustContain(t *testing.T, body string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(body, l) {
			t.Errorf("scrape lacks %q", l)
		}
	}
}

func TestSessionsAndHTTP(t *testing.T) {
	m := apimetrics.New(apimetrics.Sources{Sessions: fakeCounter{counts: map[store.Status]int64{store.StatusConnected: 3, store.StatusQR: 1}}})
	m.ObserveHTTP("GET", "/api/integrations/whatsapp/status", 200, 3*time.Millisecond)
	m.ObserveEnqueue("session:create", "enqueued")
	m.StreamOpened()
	body := scrape(t, m)
	mustContain(t, body,
		`wasessions_sessions{status="connected"} 3`,
		`wasessions_sessions{status="qr"} 1`,
		`wasessions_sessions{status="failed"} 0`,
		`wasessions_sessions_scrape_up 1`,
		`wasessions_http_requests_total{method="GET",route="/api/integrations/whatsapp/status",status="200"} 1`,
		`wasessions_http_request_duration_seconds_bucket{method="GET",route="/api/integrations/whatsapp/status",status="200",le="0.005"} 1`,
		`wasessions_api_enqueues_total{outcome="enqueued",type="session:create"} 1`,
		`wasessions_api_event_streams 1`,
		`go_goroutines`,
	)
}

// TestHTTPSeriesKeepTheirLabels: ObserveHTTP caches each series' children
// by its labels, and the server hands it strings that point into buffers
// it reuses for the next request. A series must keep the labels it was
// made with, and a later request with the same labels must count in it.
func TestHTTPSeriesKeepTheirLabels(t *testing.T) {
	m := apimetrics.New(apimetrics.Sources{})
	buf := []byte("GET")
	method := unsafe.String(&buf[0], len(buf))
	m.ObserveHTTP(method, "/api/integrations/whatsapp/status", 200, time.Millisecond)
	copy(buf, "PUT") // the server's next request reuses the buffer
	m.ObserveHTTP(method, "/api/integrations/whatsapp/status", 200, time.Millisecond)
	m.ObserveHTTP("GET", "/api/integrations/whatsapp/status", 200, time.Millisecond)
	m.ObserveHTTP("GET", "/api/integrations/whatsapp/status", 404, time.Millisecond)
	body := scrape(t, m)
	mustContain(t, body,
		`wasessions_http_requests_total{method="GET",route="/api/integrations/whatsapp/status",status="200"} 2`,
		`wasessions_http_requests_total{method="PUT",route="/api/integrations/whatsapp/status",status="200"} 1`,
		`wasessions_http_requests_total{method="GET",route="/api/integrations/whatsapp/status",status="404"} 1`,
		`wasessions_http_request_duration_seconds_count{method="GET",route="/api/integrations/whatsapp/status",status="200"} 2`,
	)
}

func TestSessionsDownDoesNotFailScrape(t *testing.T) {
	m := apimetrics.New(apimetrics.Sources{Sessions: fakeCounter{err: errors.New("postgres down")}})
	body := scrape(t, m)
	mustContain(t, body, `wasessions_sessions_scrape_up 0`)
	if strings.Contains(body, `wasessions_sessions{`) {
		t.Error("reported session counts it could not read")
	}
}

func TestQueueMetrics(t *testing.T) {
	rdbInfo := testenv.NewRedisDB(t)
	rdb := redis.NewClient(rdbInfo.Options())
	t.Cleanup(func() { rdb.Close() })
	client := asynq.NewClientFromRedisClient(rdb)
	if _, err := client.Enqueue(asynq.NewTask("session:create", nil), asynq.Queue("wa:shared")); err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	up := true
	// No cache: the second scrape must read Redis again.
	m := apimetrics.New(apimetrics.Sources{Inspector: insp, CacheFor: -1, RedisPing: func(ctx context.Context) error {
		if !up {
			return errors.New("redis down")
		}
		return rdb.Ping(ctx).Err()
	}})
	mustContain(t, scrape(t, m),
		`asynq_tasks_enqueued_total{queue="wa:shared",state="pending"} 1`,
		`asynq_queue_size{queue="wa:shared"} 1`,
		`wasessions_queue_scrape_up 1`,
	)
	up = false
	body := scrape(t, m)
	mustContain(t, body, `wasessions_queue_scrape_up 0`)
	if strings.Contains(body, "asynq_queue_size") {
		t.Error("reported queue sizes it could not read")
	}
}

// countingSessions counts the session-count queries a scrape runs on the
// real store.
type countingSessions struct {
	inner apimetrics.SessionCounter
	n     atomic.Int64
}

func (c *countingSessions) CountByStatus(ctx context.Context) (map[store.Status]int64, error) {
	c.n.Add(1)
	return c.inner.CountByStatus(ctx)
}

// countingHook counts the commands a Redis client sends.
type countingHook struct{ n *atomic.Int64 }

func (h countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(int64(len(cmds))); return next(ctx, cmds) }
}

// Scrapes within the cache period run the Postgres GROUP BY and the walk
// of asynq's queues once, however many there are; after the period, the
// next scrape reads again.
func TestScrapeTimeReadsAreCached(t *testing.T) {
	st, _ := testenv.NewStore(t)
	rinfo := testenv.NewRedisDB(t)
	rdb := redis.NewClient(rinfo.Options())
	t.Cleanup(func() { rdb.Close() })
	var cmds atomic.Int64
	rdb.AddHook(countingHook{&cmds})
	insp := asynq.NewInspectorFromRedisClient(rdb)
	sessions := &countingSessions{inner: st}
	newMetrics := func(cacheFor time.Duration) *apimetrics.Metrics {
		return apimetrics.New(apimetrics.Sources{Sessions: sessions, Inspector: insp, CacheFor: cacheFor,
			RedisPing: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }})
	}

	m := newMetrics(time.Hour)
	first := scrape(t, m)
	mustContain(t, first, `wasessions_sessions_scrape_up 1`, `wasessions_queue_scrape_up 1`)
	queries, commands := sessions.n.Load(), cmds.Load()
	if queries != 1 || commands == 0 {
		t.Fatalf("first scrape: %d session queries, %d Redis commands", queries, commands)
	}
	for i := 0; i < 20; i++ {
		if body := scrape(t, m); !strings.Contains(body, `wasessions_sessions{status="connected"} 0`) {
			t.Fatalf("a cached scrape lost the session counts:\n%s", body)
		}
	}
	if q, c := sessions.n.Load(), cmds.Load(); q != queries || c != commands {
		t.Fatalf("20 more scrapes within the period ran %d session queries and %d Redis commands; want none", q-queries, c-commands)
	}

	// A short period: once it has passed, a scrape reads again.
	short := newMetrics(10 * time.Millisecond)
	scrape(t, short)
	before := sessions.n.Load()
	time.Sleep(50 * time.Millisecond)
	scrape(t, short)
	if sessions.n.Load() != before+1 {
		t.Fatalf("after the period, a scrape ran %d session queries; want 1", sessions.n.Load()-before)
	}
}
