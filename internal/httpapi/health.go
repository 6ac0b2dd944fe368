package httpapi

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
)

// healthz says the process is up; it checks nothing else, so an outage of
// Postgres or Redis never gets the API restarted (see readyz).
func (s *server) healthz(c *fiber.Ctx) error {
	return ok(c, http.StatusOK, fiber.Map{"status": "ok"}, "up")
}

// readyCheckTimeout bounds each store's ping in /readyz.
const readyCheckTimeout = 2 * time.Second

// readyz answers 200 when Postgres and Redis both answer, else 503 naming
// the store that does not, so a load balancer stops routing here while the
// API cannot serve, and resumes by itself when it can.
func (s *server) readyz(c *fiber.Ctx) error {
	ctx, cancel := context.WithTimeout(c.UserContext(), readyCheckTimeout)
	defer cancel()
	var pgErr, redisErr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pgErr = s.deps.Store.Ping(ctx) }()
	go func() { defer wg.Done(); redisErr = s.deps.Redis.Ping(ctx).Err() }()
	wg.Wait()

	state := func(err error) string {
		if err != nil {
			return "unavailable"
		}
		return "ok"
	}
	checks := fiber.Map{"postgres": state(pgErr), "redis": state(redisErr)}
	switch {
	case pgErr == nil && redisErr == nil:
		return ok(c, http.StatusOK, checks, "ready")
	case pgErr != nil && redisErr != nil:
		return &apiError{Status: http.StatusServiceUnavailable, Code: "not_ready",
			Message: "Postgres and Redis are unavailable", Details: checks}
	case pgErr != nil:
		return &apiError{Status: http.StatusServiceUnavailable, Code: codeDatabaseUnavailable,
			Message: "Postgres is unavailable", Details: checks}
	default:
		return &apiError{Status: http.StatusServiceUnavailable, Code: codeRedisUnavailable,
			Message: "Redis is unavailable", Details: checks}
	}
}
