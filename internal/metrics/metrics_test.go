package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"wasessions/internal/metrics"
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

func scrape(t *testing.T, m *metrics.Metrics) string {
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
	m := metrics.New(metrics.Sources{Sessions: fakeCounter{counts: map[store.Status]int64{store.StatusConnected: 3, store.StatusQR: 1}}})
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

func TestSessionsDownDoesNotFailScrape(t *testing.T) {
	m := metrics.New(metrics.Sources{Sessions: fakeCounter{err: errors.New("postgres down")}})
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
	m := metrics.New(metrics.Sources{Inspector: insp, RedisPing: func(ctx context.Context) error {
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
