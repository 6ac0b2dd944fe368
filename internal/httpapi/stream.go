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

// streamRefused answers a stream the hub would not open: 429 above the
// user's or the process's stream cap, 503 while Redis is unavailable.
func streamRefused(err error) error {
	switch {
	case errors.Is(err, events.ErrUserStreams):
		return fail(http.StatusTooManyRequests, codeTooManyStreams,
			"this user already has the most event streams open allowed; close one first")
	case errors.Is(err, events.ErrProcessStreams):
		return fail(http.StatusTooManyRequests, codeTooManyStreams,
			"this server has the most event streams open it allows; retry shortly")
	default:
		return queueUnavailable(err, "Redis is unavailable; the event stream cannot start, retry shortly", nil)
	}
}

// sseWriter writes server-sent events on one stream, numbering them.
type sseWriter struct {
	w   *bufio.Writer
	seq uint64
}

// send writes one event (the next id, typ, v as JSON) and flushes it; an
// error means the client is gone.
func (s *sseWriter) send(typ string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.seq++
	s.w.WriteString("id: " + strconv.FormatUint(s.seq, 10) + "\nevent: " + typ + "\ndata: ")
	s.w.Write(data)
	s.w.WriteString("\n\n")
	return s.w.Flush()
}

// stream is what tells the user's event stream and the operators' apart;
// serveStream runs the rest.
type stream struct {
	// name opens the log line written when the stream ends.
	name   string
	userID string
	// expires is when the token the stream was opened with expires: the
	// stream must not outlive it.
	expires time.Time
	sub     *events.Listener
	// first sends what opens every (re)connect.
	first func(w *sseWriter) error
	// changed sends what the subscription signalled as changed, reading
	// Postgres with ctx; a reason ends the stream ("" goes on).
	changed func(ctx context.Context, w *sseWriter) (end string)
}

// serveStream answers c with the stream st: the retry hint, st.first, then
// what st.changed sends at each signal, and a comment line every heartbeat.
// It ends when the client goes away (seen at the next write, at the latest
// the next heartbeat), when the hub loses Redis (the client reconnects and
// reads the current state rather than stay deaf to what is published
// meanwhile), when the token expires (saying so first, so that a client
// asks for a new token rather than reconnect with the old one), when
// st.changed says so, or when the server's BaseContext is done (shutdown).
func (s *server) serveStream(c *fiber.Ctx, st stream) {
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	c.Status(fiber.StatusOK)

	ctx, cancel := context.WithCancel(s.opts.BaseContext)
	heartbeat, retry := s.opts.Heartbeat, s.opts.RetryHint
	log, m := s.log, s.metrics
	expiry := time.NewTimer(time.Until(st.expires))
	m.StreamOpened()
	c.Context().SetBodyStreamWriter(func(bw *bufio.Writer) {
		start := time.Now()
		why := clientGone
		defer func() {
			expiry.Stop()
			st.sub.Close()
			cancel()
			m.StreamClosed()
			log.Info(st.name+" ended", "user_id", st.userID, "reason", why, "duration_ms", time.Since(start).Milliseconds())
		}()
		w := &sseWriter{w: bw}
		if _, err := bw.WriteString("retry: " + strconv.FormatInt(retry.Milliseconds(), 10) + "\n\n"); err != nil {
			return
		}
		if st.first(w) != nil {
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
				bw.WriteString(": token expired\n\n")
				bw.Flush()
				return
			case <-tick.C:
				bw.WriteString(": ping\n\n")
				if bw.Flush() != nil {
					return // the client is gone
				}
			case _, open := <-st.sub.C:
				if !open {
					why = "event subscription ended"
					return
				}
				if end := st.changed(ctx, w); end != "" {
					why = end
					return
				}
			}
		}
	})
}

// clientGone is the reason a stream ends when a write fails.
const clientGone = "client gone"
