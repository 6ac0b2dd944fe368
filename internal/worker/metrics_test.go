package worker

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"wasessions/internal/auth"
)

// The profiler is served only when asked for (METRICS_PPROF), and then
// only to the bearer of METRICS_TOKEN, like /metrics; /healthz stays open.
func TestMetricsHandlerServesThePprofOnlyWhenAskedAndBehindTheToken(t *testing.T) {
	const token = "pprof-test-token-0123456789"
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	tests := []struct {
		name         string
		pprof        bool
		path, bearer string
		want         int
		bodyContains string
	}{
		{"off: no profiler even with the token", false, "/debug/pprof/", token, http.StatusNotFound, ""},
		{"off: no CPU profile", false, "/debug/pprof/profile?seconds=1", token, http.StatusNotFound, ""},
		{"on: refused without the token", true, "/debug/pprof/", "", http.StatusUnauthorized, ""},
		{"on: refused with another token", true, "/debug/pprof/goroutine?debug=1", "not-the-token-0123456789", http.StatusUnauthorized, ""},
		{"on: index with the token", true, "/debug/pprof/", token, http.StatusOK, "goroutine"},
		{"on: goroutines with the token", true, "/debug/pprof/goroutine?debug=1", token, http.StatusOK, "goroutine profile"},
		{"on: metrics still behind the token", true, "/metrics", "", http.StatusUnauthorized, ""},
		{"on: healthz open", true, "/healthz", "", http.StatusOK, "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := MetricsHandler(reg, auth.NewMetricsToken(token), tt.pprof)
			req := httptest.NewRequest(http.MethodGet, tt.path, nil)
			if tt.bearer != "" {
				req.Header.Set("Authorization", "Bearer "+tt.bearer)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.want || !strings.Contains(rec.Body.String(), tt.bodyContains) {
				t.Fatalf("GET %s: %d %.120q, want %d containing %q", tt.path, rec.Code, rec.Body.String(), tt.want, tt.bodyContains)
			}
		})
	}
}
