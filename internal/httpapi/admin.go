package httpapi

import (
	"context"
	"net/http"

	"github.com/gofiber/fiber/v2"

	"wasessions/internal/cleanup"
)

// statsView is GET /sessions/stats' data.
type statsView struct {
	Total   int64 `json:"total"`
	Active  int64 `json:"active"`
	Expired int64 `json:"expired"`
	// Scope is "user" (the caller's own sessions) or "all" (admin).
	Scope string `json:"scope"`
}

// stats is GET /api/integrations/sessions/stats: the caller's own counts,
// or everyone's for an admin token.
func (s *server) stats(c *fiber.Ctx) error {
	ctx := s.requestContext()
	id := identity(c)
	userID, scope := id.UserID, "user"
	if id.Admin {
		userID, scope = "", "all"
	}
	st, err := s.deps.Store.Stats(ctx, userID)
	if err != nil {
		return err
	}
	return ok(c, http.StatusOK, statsView{Total: st.Total, Active: st.Active, Expired: st.Expired, Scope: scope}, "Session statistics")
}

// cleanup is POST /api/integrations/sessions/cleanup (admin only): what the
// hourly cleanup does, now. It waits a bounded time for workers to stop the
// expired sessions they host, so the count includes them.
func (s *server) cleanup(c *fiber.Ctx) error {
	ctx, cancel := context.WithTimeout(c.UserContext(), s.opts.RequestTimeout+s.opts.CleanupWaitHosted)
	defer cancel()
	res, err := cleanup.Run(ctx, cleanup.Deps{Store: s.deps.Store, Enqueuer: s.deps.Enqueuer, Bus: s.deps.Bus, Log: s.log},
		cleanup.Options{WaitHosted: s.opts.CleanupWaitHosted, MessageRetention: s.opts.MessageRetention})
	if err != nil {
		return err
	}
	return ok(c, http.StatusOK, res, "Expired sessions cleaned up")
}
