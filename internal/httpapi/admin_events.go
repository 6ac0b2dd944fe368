package httpapi

import (
	"context"
	"time"

	"github.com/gofiber/fiber/v2"
)

// Admin stream event types.
const (
	// adminEventReady opens every (re)connect: the stream is subscribed, so
	// what the client reads from the admin API now is current and every
	// later change will follow.
	adminEventReady = "ready"
	// adminEventSession is one session as Postgres holds it after a change.
	adminEventSession = "session"
	// adminEventResync: more changed at once than the stream sends one by
	// one; the client reads the admin API again.
	adminEventResync = "resync"
)

// adminStreamNotice is the data of ready and resync events.
type adminStreamNotice struct {
	At time.Time `json:"at"`
}

// adminEvents is GET /api/integrations/admin/events: the live feed of the
// admin dashboard, every user's session changes for an operator.
//
// It shares the process's one Redis subscription (events.Hub.StreamAll)
// and its caps: one stream counts as one of the operator's streams. As on
// the user's stream, an announcement on Redis is only a hint of which
// session changed: the stream sends what Postgres holds of that session
// (an AdminSession), so a forged announcement can at most make it send a
// true state again. Changes that come faster than they are read are
// coalesced; more than events.MaxPendingChanges sessions at once become one
// resync event. The stream ends as the user's does: client gone, Redis
// subscription lost, token expired, shutdown.
func (s *server) adminEvents(c *fiber.Ctx) error {
	id := identity(c)
	sctx, scancel := s.redisContext(c.UserContext()) // as the user's stream does
	sub, err := s.deps.Hub.StreamAll(sctx, id.UserID)
	scancel()
	if err != nil {
		return streamRefused(err)
	}
	timeout, log, st := s.opts.RequestTimeout, s.log, s.deps.Store
	s.serveStream(c, stream{
		name: "admin event stream", userID: id.UserID, expires: id.ExpiresAt, sub: sub,
		first: func(w *sseWriter) error {
			return w.send(adminEventReady, adminStreamNotice{At: time.Now().UTC()})
		},
		changed: func(ctx context.Context, w *sseWriter) string {
			ids, overflow := sub.Changed()
			if overflow {
				if w.send(adminEventResync, adminStreamNotice{At: time.Now().UTC()}) != nil {
					return clientGone
				}
				return ""
			}
			if len(ids) == 0 {
				return ""
			}
			readCtx, readCancel := context.WithTimeout(ctx, timeout)
			list, err := st.AdminSessions(readCtx, ids)
			readCancel()
			if err != nil {
				log.Warn("admin event stream: read the sessions; ending the stream", "user_id", id.UserID, "error", err)
				return "database read failed"
			}
			for _, sess := range list {
				if w.send(adminEventSession, adminViewOf(sess)) != nil {
					return clientGone
				}
			}
			return ""
		},
	})
	return nil
}
