package httpapi

import (
	"net/http"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"

	"wasessions/internal/auth"
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

// bearerToken requires "Authorization: Bearer <token>" (auth.MetricsToken:
// the same check a worker's /metrics makes).
func bearerToken(token string) fiber.Handler {
	check := auth.NewMetricsToken(token)
	return func(c *fiber.Ctx) error {
		if check.Allows(c.Get(fiber.HeaderAuthorization)) {
			return c.Next()
		}
		return &apiError{Status: http.StatusUnauthorized, Code: "metrics_unauthorized",
			Message: "/metrics needs Authorization: Bearer <METRICS_TOKEN>",
			Header:  map[string]string{fiber.HeaderWWWAuthenticate: `Bearer realm="metrics"`}}
	}
}
