package httpapi_test

import (
	"net/http"
	"strings"
	"testing"

	"wasessions/internal/httpapi"
)

const metricsToken = "metrics-token-0123456789abcdef"

// With METRICS_TOKEN, /metrics answers only the bearer of that token; a
// user's JWT is not it.
func TestMetricsBehindToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *setup) { s.opts.MetricsToken = metricsToken })
	h := func(v string) map[string]string { return map[string]string{"Authorization": v} }
	for _, auth := range []string{"", "Bearer wrong-token", "Basic " + metricsToken, "Bearer " + e.token(newUser(), true)} {
		r := e.do(req{method: "GET", path: "/metrics", header: h(auth)})
		r.wantError(t, http.StatusUnauthorized, "metrics_unauthorized")
		if strings.Contains(string(r.Body), "wasessions_") {
			t.Fatalf("metrics leaked in a refusal: %s", r.Body)
		}
	}
	r := e.do(req{method: "GET", path: "/metrics", header: h("Bearer " + metricsToken)})
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), "wasessions_sessions_scrape_up 1") {
		t.Fatalf("with the token: %d\n%.500s", r.Status, r.Body)
	}
}

// With API_METRICS_ADDR the public app has no /metrics (404), and the
// metrics app serves it, counting the public app's requests.
func TestMetricsOnTheirOwnAddress(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *setup) { s.opts.MetricsApart = true })
	e.do(req{method: "GET", path: "/metrics"}).wantError(t, http.StatusNotFound, "not_found")
	e.do(req{method: "GET", path: statusPath, token: e.token(newUser(), false)})
	mapp := httpapi.NewMetricsApp(e.deps, e.opts)
	res, err := mapp.Test(mustRequest(t, "GET", "/metrics"), 30_000)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, res)
	if res.StatusCode != http.StatusOK || !strings.Contains(body, `wasessions_http_requests_total{method="GET",route="/api/integrations/whatsapp/status",status="404"} 1`) {
		t.Fatalf("the metrics app: %d\n%.1000s", res.StatusCode, body)
	}
}

func mustRequest(t *testing.T, method, path string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, "http://localhost"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
