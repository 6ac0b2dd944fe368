package httpapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"

	"wasessions/internal/testfactory"
	"wasessions/internal/views"
	"wasessions/tasks"
)

func basic(user, pass string) map[string]string {
	return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}
}

func TestMonitor(t *testing.T) {
	t.Parallel()
	t.Run("off without a password", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.do(req{method: "GET", path: "/monitor"}).wantError(t, http.StatusNotFound, "not_found")
		e.do(req{method: "GET", path: "/monitor/api/queues", header: basic("admin", "")}).wantError(t, http.StatusNotFound, "not_found")
	})
	t.Run("behind basic auth", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, func(s *setup) { s.opts.MonitorUser, s.opts.MonitorPassword = "ops", monitorPass })
		for name, h := range map[string]map[string]string{
			"no credentials": nil,
			"wrong password": basic("ops", "nope"),
			"wrong user":     basic("admin", monitorPass),
			"bearer token":   {"Authorization": "Bearer " + e.token(newUser(), true)},
			"garbage":        {"Authorization": "Basic %%%"},
		} {
			r := e.do(req{method: "GET", path: "/monitor", header: h})
			r.wantError(t, http.StatusUnauthorized, "monitor_unauthorized")
			if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Basic ") {
				t.Fatalf("%s: WWW-Authenticate = %q", name, r.Header.Get("WWW-Authenticate"))
			}
		}
		r := e.do(req{method: "GET", path: "/monitor", header: basic("ops", monitorPass)})
		if r.Status != http.StatusOK || !strings.Contains(strings.ToLower(string(r.Body)), "<html") {
			t.Fatalf("monitor with credentials: %d %.300s", r.Status, r.Body)
		}
		// Its own JSON API, reached without any JWT.
		r = e.do(req{method: "GET", path: "/monitor/api/queues", header: basic("ops", monitorPass)})
		if r.Status != http.StatusOK || !strings.Contains(string(r.Body), "queues") {
			t.Fatalf("monitor API: %d %.300s", r.Status, r.Body)
		}
	})
}

const monitorPass = "s3cret-pass-0123456789"

// TestMonitorReadOnly is the attack of issue 8, finding 4: someone holding
// the monitor's login pauses the shared queue (or a worker's, so the
// user's disconnects it owes never run). By default the pause is refused
// and the queue keeps running; MonitorWritable lets it through.
func TestMonitorReadOnly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		writable   bool
		wantPaused bool
	}{
		{"default is read-only", false, false},
		{"writable on request", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(s *setup) {
				s.opts.MonitorUser, s.opts.MonitorPassword, s.opts.MonitorWritable = "ops", monitorPass, tc.writable
			})
			tok := e.token(newUser(), false)
			if r := e.do(req{method: "POST", path: sessionPath, token: tok}); r.Status != http.StatusCreated {
				t.Fatalf("create: %d %.300s", r.Status, r.Body)
			}
			pause := "/monitor/api/queues/" + tasks.QueueShared + ":pause"
			r := e.do(req{method: "POST", path: pause, header: basic("ops", monitorPass)})
			if tc.writable {
				if r.Status != http.StatusNoContent {
					t.Fatalf("pause with MonitorWritable: %d %.300s", r.Status, r.Body)
				}
			} else {
				r.wantError(t, http.StatusMethodNotAllowed, "monitor_read_only")
				// Deleting the pending create task is refused too.
				pending, err := e.inspector.ListPendingTasks(tasks.QueueShared)
				if err != nil || len(pending) != 1 {
					t.Fatalf("pending tasks %v, %v", pending, err)
				}
				del := "/monitor/api/queues/" + pending[0].Queue + "/pending_tasks/" + pending[0].ID
				e.do(req{method: "DELETE", path: del, header: basic("ops", monitorPass)}).
					wantError(t, http.StatusMethodNotAllowed, "monitor_read_only")
				if left, err := e.inspector.ListPendingTasks(pending[0].Queue); err != nil || len(left) != 1 {
					t.Fatalf("after the refused delete: pending %v, %v", left, err)
				}
			}
			info, err := e.inspector.GetQueueInfo(tasks.QueueShared)
			if err != nil {
				t.Fatal(err)
			}
			if info.Paused != tc.wantPaused {
				t.Fatalf("queue paused = %v, want %v", info.Paused, tc.wantPaused)
			}
			// Reading still works in both modes.
			r = e.do(req{method: "GET", path: "/monitor/api/queues", header: basic("ops", monitorPass)})
			if r.Status != http.StatusOK {
				t.Fatalf("monitor API: %d %.300s", r.Status, r.Body)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := e.token(newUser(), false)
	e.do(req{method: "POST", path: sessionPath, token: tok})
	e.do(req{method: "GET", path: statusPath, token: tok})
	e.do(req{method: "GET", path: "/no/such/path/" + newUser()})
	r := e.do(req{method: "GET", path: "/metrics"})
	body := string(r.Body)
	for _, want := range []string{
		`wasessions_http_requests_total{method="GET",route="/api/integrations/whatsapp/status",status="200"} 1`,
		`wasessions_http_requests_total{method="POST",route="/api/integrations/whatsapp/session",status="201"} 1`,
		`wasessions_http_requests_total{method="GET",route="unmatched",status="404"} 1`,
		`wasessions_http_request_duration_seconds_count{method="GET",route="/api/integrations/whatsapp/status",status="200"} 1`,
		`wasessions_sessions{status="pending"} 1`,
		`wasessions_sessions_scrape_up 1`,
		`wasessions_api_enqueues_total{outcome="enqueued",type="session:create"} 1`,
		`asynq_queue_size{queue="wa:shared"} 1`,
		`asynq_tasks_enqueued_total{queue="wa:shared",state="pending"} 1`,
		`wasessions_queue_scrape_up 1`,
		`process_cpu_seconds_total`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
			t.Log(grepLines(body, "wasessions_http_requests_total"))
		}
	}
	if strings.Contains(body, "/no/such/path") {
		t.Error("a raw path became a label")
	}
}

func TestStaticFilesMountAtRoot(t *testing.T) {
	t.Parallel()
	page := "<!doctype html><title>link WhatsApp</title>"
	e := newEnv(t, func(s *setup) {
		s.opts.Static = fstest.MapFS{"index.html": {Data: []byte(page)}, "app.js": {Data: []byte("console.log(1)")}}
	})
	for path, want := range map[string]string{"/": page, "/app.js": "console.log(1)"} {
		r := e.do(req{method: "GET", path: path})
		if r.Status != 200 || string(r.Body) != want {
			t.Fatalf("%s: %d %q", path, r.Status, r.Body)
		}
	}
	e.do(req{method: "GET", path: "/missing.css"}).wantError(t, http.StatusNotFound, "not_found")
	// API routes still need their token; unknown API paths are still 404.
	e.do(req{method: "GET", path: statusPath}).wantError(t, http.StatusUnauthorized, "token_missing")
	e.do(req{method: "GET", path: "/api/nothing"}).wantError(t, http.StatusNotFound, "not_found")
}

func grepLines(body, prefix string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestStatusReadsLogAtDebug: at the production level (info), a status
// read that succeeded leaves no request line (clients poll it), while one
// that failed, and every other route, still does.
func TestStatusReadsLogAtDebug(t *testing.T) {
	t.Parallel()
	var buf testfactory.LogBuffer
	e := newEnv(t, func(s *setup) {
		s.log = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	polled, never := newUser(), newUser()
	e.do(req{method: "POST", path: sessionPath, token: e.token(polled, false)})
	for range 3 {
		if r := e.do(req{method: "GET", path: statusPath, token: e.token(polled, false)}); r.Status != http.StatusOK {
			t.Fatalf("status: %d %s", r.Status, r.Body)
		}
	}
	e.do(req{method: "GET", path: statusPath, token: e.token(never, false)}).wantError(t, http.StatusNotFound, "session_not_found")
	lines := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var rec struct {
			Msg    string `json:"msg"`
			Route  string `json:"route"`
			Status int    `json:"status"`
		}
		if json.Unmarshal([]byte(l), &rec) == nil && rec.Msg == "request" {
			lines[fmt.Sprintf("%s %d", rec.Route, rec.Status)]++
		}
	}
	want := map[string]int{sessionPath + " 201": 1, statusPath + " 404": 1}
	if !maps.Equal(lines, want) {
		t.Fatalf("request lines at info: %v, want %v", lines, want)
	}
}

// TestStatusAnswerIsEncodingJSON: GET /status encodes its answer by hand
// (views.Session.AppendJSON); the body is byte for byte what encoding/json
// made of the same envelope, with the headers every session route sends.
func TestStatusAnswerIsEncodingJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	user := newUser()
	tok := e.token(user, false)
	if r := e.do(req{method: "POST", path: sessionPath, token: tok}); r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	// Fields set and null, and text encoding/json escapes.
	if _, err := e.store.Pool().Exec(context.Background(), `UPDATE whatsapp_sessions SET user_name = $2,
		phone_number = '4915112345678', status_reason = 'qr_timeout', last_seen = now(), last_error = 'phone_offline'
		WHERE user_id = $1`, user, "Zoë <&> \"\u2028\" \x01"); err != nil {
		t.Fatal(err)
	}
	r := e.do(req{method: "GET", path: statusPath, token: tok})
	if r.Status != http.StatusOK {
		t.Fatalf("status: %d %s", r.Status, r.Body)
	}
	sess, err := e.store.CurrentStatus(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(struct {
		Success bool          `json:"success"`
		Data    views.Session `json:"data"`
		Message string        `json:"message"`
	}{true, views.StatusOf(sess), "WhatsApp session status"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Body, want) {
		t.Fatalf("body:\n%s\nencoding/json:\n%s", r.Body, want)
	}
	if ct, cc := r.Header.Get("Content-Type"), r.Header.Get("Cache-Control"); ct != "application/json" || cc != "no-store" {
		t.Fatalf("Content-Type %q, Cache-Control %q", ct, cc)
	}
}
