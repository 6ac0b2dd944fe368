package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"wasessions/internal/events"
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
	ctx, cancel := context.WithCancel(s.opts.BaseContext)
	sub, err := s.deps.Hub.StreamAll(c.UserContext(), id.UserID)
	switch {
	case errors.Is(err, events.ErrUserStreams):
		cancel()
		return fail(http.StatusTooManyRequests, codeTooManyStreams,
			"this user already has the most event streams open allowed; close one first")
	case errors.Is(err, events.ErrProcessStreams):
		cancel()
		return fail(http.StatusTooManyRequests, codeTooManyStreams,
			"this server has the most event streams open it allows; retry shortly")
	case err != nil:
		cancel()
		return queueUnavailable(err, "Redis is unavailable; the event stream cannot start, retry shortly", nil)
	}

	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set("X-Accel-Buffering", "no")
	c.Status(fiber.StatusOK)

	heartbeat, retry, timeout := s.opts.Heartbeat, s.opts.RetryHint, s.opts.RequestTimeout
	log, m, st := s.log, s.metrics, s.deps.Store
	expiry := time.NewTimer(time.Until(id.ExpiresAt))
	m.StreamOpened()
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		start := time.Now()
		why := "client gone"
		defer func() {
			expiry.Stop()
			sub.Close()
			cancel()
			m.StreamClosed()
			log.Info("admin event stream ended", "user_id", id.UserID, "reason", why, "duration_ms", time.Since(start).Milliseconds())
		}()
		var seq uint64
		send := func(typ string, v any) error {
			data, err := json.Marshal(v)
			if err != nil {
				return err
			}
			seq++
			w.WriteString("id: " + strconv.FormatUint(seq, 10) + "\nevent: " + typ + "\ndata: ")
			w.Write(data)
			w.WriteString("\n\n")
			return w.Flush()
		}
		if _, err := w.WriteString("retry: " + strconv.FormatInt(retry.Milliseconds(), 10) + "\n\n"); err != nil {
			return
		}
		if send(adminEventReady, adminStreamNotice{At: time.Now().UTC()}) != nil {
			return
		}
		tick := time.NewTicker(heartbeat)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				why = "shutdown"
				return
			case <-expiry.C:
				why = "token expired"
				w.WriteString(": token expired\n\n")
				w.Flush()
				return
			case <-tick.C:
				w.WriteString(": ping\n\n")
				if w.Flush() != nil {
					return
				}
			case _, open := <-sub.C:
				if !open {
					why = "event subscription ended"
					return
				}
				ids, overflow := sub.Changed()
				if overflow {
					if send(adminEventResync, adminStreamNotice{At: time.Now().UTC()}) != nil {
						return
					}
					continue
				}
				if len(ids) == 0 {
					continue
				}
				readCtx, readCancel := context.WithTimeout(ctx, timeout)
				list, err := st.AdminSessions(readCtx, ids)
				readCancel()
				if err != nil {
					why = "database read failed"
					log.Warn("admin event stream: read the sessions; ending the stream", "user_id", id.UserID, "error", err)
					return
				}
				for _, sess := range list {
					if send(adminEventSession, adminViewOf(sess)) != nil {
						return
					}
				}
			}
		}
	})
	return nil
}
