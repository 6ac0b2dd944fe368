package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
)

// metricsRoutes serves GET /metrics, behind Options.MetricsToken when set.
func (s *server) metricsRoutes(app *fiber.App) {
	h := adaptor.HTTPHandler(s.metrics.Handler())
	if s.opts.MetricsToken == "" {
		app.Get("/metrics", h)
		return
	}
	app.Get("/metrics", bearerToken(s.opts.MetricsToken), h)
}

// NewMetricsApp serves only /metrics (behind Options.MetricsToken when
// set), for API_METRICS_ADDR: an internal address the public never
// reaches. Give New the same Options with MetricsApart, and the same
// Deps.Metrics (NewMetrics), so both report into one registry.
func NewMetricsApp(deps Deps, opts Options) *fiber.App {
	s := newServer(deps, opts)
	app := s.newApp("wasessions-metrics")
	app.Use(s.observe, s.recoverPanic, refuseEncodedBodies)
	s.metricsRoutes(app)
	return app
}

// bearerToken requires "Authorization: Bearer <token>", compared in
// constant time over hashes (neither content nor length leaks).
func bearerToken(token string) fiber.Handler {
	want := sha256.Sum256([]byte(token))
	return func(c *fiber.Ctx) error {
		scheme, got, _ := strings.Cut(c.Get(fiber.HeaderAuthorization), " ")
		if strings.EqualFold(scheme, "Bearer") {
			h := sha256.Sum256([]byte(strings.TrimSpace(got)))
			if subtle.ConstantTimeCompare(h[:], want[:]) == 1 {
				return c.Next()
			}
		}
		return &apiError{Status: http.StatusUnauthorized, Code: "metrics_unauthorized",
			Message: "/metrics needs Authorization: Bearer <METRICS_TOKEN>",
			Header:  map[string]string{fiber.HeaderWWWAuthenticate: `Bearer realm="metrics"`}}
	}
}
