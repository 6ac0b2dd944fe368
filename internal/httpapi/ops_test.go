package httpapi_test

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"
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
		e := newEnv(t, func(s *setup) { s.opts.MonitorUser, s.opts.MonitorPassword = "ops", "s3cret-pass" })
		for name, h := range map[string]map[string]string{
			"no credentials": nil,
			"wrong password": basic("ops", "nope"),
			"wrong user":     basic("admin", "s3cret-pass"),
			"bearer token":   {"Authorization": "Bearer " + e.token(newUser(), true)},
			"garbage":        {"Authorization": "Basic %%%"},
		} {
			r := e.do(req{method: "GET", path: "/monitor", header: h})
			r.wantError(t, http.StatusUnauthorized, "monitor_unauthorized")
			if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Basic ") {
				t.Fatalf("%s: WWW-Authenticate = %q", name, r.Header.Get("WWW-Authenticate"))
			}
		}
		r := e.do(req{method: "GET", path: "/monitor", header: basic("ops", "s3cret-pass")})
		if r.Status != http.StatusOK || !strings.Contains(strings.ToLower(string(r.Body)), "<html") {
			t.Fatalf("monitor with credentials: %d %.300s", r.Status, r.Body)
		}
		// Its own JSON API, reached without any JWT.
		r = e.do(req{method: "GET", path: "/monitor/api/queues", header: basic("ops", "s3cret-pass")})
		if r.Status != http.StatusOK || !strings.Contains(string(r.Body), "queues") {
			t.Fatalf("monitor API: %d %.300s", r.Status, r.Body)
		}
	})
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
