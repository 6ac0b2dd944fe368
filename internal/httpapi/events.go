package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"wasessions/internal/events"
	"wasessions/internal/store"
)

// streamEvent is the data of one server-sent event: the fields of
// events.Event with the phone number shown in E.164, as everywhere else in
// the API. Status "none" (with no sessionId) means the user has no session.
type streamEvent struct {
	Type        string    `json:"type"`
	SessionID   string    `json:"sessionId,omitempty"`
	Status      string    `json:"status"`
	Reason      string    `json:"reason,omitempty"`
	QRCode      string    `json:"qrCode,omitempty"`
	QRRaw       string    `json:"qrRaw,omitempty"`
	PairingCode string    `json:"pairingCode,omitempty"`
	PhoneNumber string    `json:"phoneNumber,omitempty"`
	UserName    string    `json:"userName,omitempty"`
	LastError   string    `json:"lastError,omitempty"`
	At          time.Time `json:"at"`
}

func streamEventOf(e events.Event) streamEvent {
	return streamEvent{
		Type: e.Type, SessionID: e.SessionID, Status: e.Status, Reason: e.Reason,
		QRCode: e.QRCode, QRRaw: e.QRRaw, PairingCode: e.PairingCode,
		PhoneNumber: store.Str(e164(&e.PhoneNumber)), UserName: e.UserName, LastError: e.LastError,
		At: e.At.UTC(),
	}
}

// initialEvents is the user's current state as events, sent first on every
// (re)connect: the status, then the QR or pairing code if one is showing.
func initialEvents(sess store.Session, found bool) []streamEvent {
	if !found {
		return []streamEvent{{Type: events.TypeStatus, Status: string(store.StatusNone), Reason: string(store.ReasonNoSession), At: time.Now().UTC()}}
	}
	out := []streamEvent{streamEventOf(events.FromSession(events.TypeStatus, sess))}
	if sess.QRCode != nil {
		out = append(out, streamEventOf(events.FromSession(events.TypeQR, sess)))
	}
	if sess.PairingCode != nil {
		out = append(out, streamEventOf(events.FromSession(events.TypePairingCode, sess)))
	}
	return out
}

// events is GET /api/integrations/whatsapp/events: a server-sent event
// stream of the caller's session events. The events come from Redis
// pub/sub, one channel per user, so any API replica serves any user
// whichever worker produced the event, and a user only ever receives their
// own. On every connect the current state goes first, read after the
// subscription began, so nothing falls between the two (a duplicate can;
// events are states, so a repeat is harmless). Last-Event-ID is not used:
// the current state replaces any replay.
//
// The stream ends when the client goes away (seen at the next write, at
// the latest the next heartbeat), when its subscription ends, or when the
// server's BaseContext is done (shutdown).
func (s *server) events(c *fiber.Ctx) error {
	userID := identity(c).UserID
	ctx, cancel := context.WithCancel(s.opts.BaseContext)
	sub, err := s.deps.Bus.Subscribe(ctx, userID)
	if err != nil {
		cancel()
		return queueUnavailable(err, "Redis is unavailable; the event stream cannot start, retry shortly", nil)
	}
	readCtx, readCancel := s.requestContext(c)
	sess, err := s.deps.Store.CurrentSession(readCtx, userID)
	readCancel()
	found := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		sub.Close()
		cancel()
		return err
	}
	if found {
		noteSession(c, sess.SessionID)
	}
	first := initialEvents(sess, found)

	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	c.Status(fiber.StatusOK)

	heartbeat, retry := s.opts.Heartbeat, s.opts.RetryHint
	log, m, rdb := s.log, s.metrics, s.deps.Redis
	m.StreamOpened()
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		start := time.Now()
		defer func() {
			sub.Close()
			cancel()
			m.StreamClosed()
			log.Info("event stream ended", "user_id", userID, "duration_ms", time.Since(start).Milliseconds())
		}()
		var seq uint64
		send := func(e streamEvent) error {
			data, err := json.Marshal(e)
			if err != nil {
				return err
			}
			seq++
			w.WriteString("id: " + strconv.FormatUint(seq, 10) + "\nevent: " + e.Type + "\ndata: ")
			w.Write(data)
			w.WriteString("\n\n")
			return w.Flush()
		}
		if _, err := w.WriteString("retry: " + strconv.FormatInt(retry.Milliseconds(), 10) + "\n\n"); err != nil {
			return
		}
		for _, e := range first {
			if send(e) != nil {
				return
			}
		}
		tick := time.NewTicker(heartbeat)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				// Pub/sub drops what is published while its connection is
				// down. If Redis does not answer, end the stream: the client
				// reconnects (503 until Redis is back) and then gets the
				// current state first, so it misses nothing for good.
				pingCtx, pingCancel := context.WithTimeout(ctx, 2*time.Second)
				err := rdb.Ping(pingCtx).Err()
				pingCancel()
				if err != nil {
					log.Warn("event stream: Redis is unavailable; ending the stream", "user_id", userID, "error", err)
					return
				}
				w.WriteString(": ping\n\n")
				if w.Flush() != nil {
					return // the client is gone
				}
			case e, open := <-sub.C:
				if !open {
					return
				}
				if send(streamEventOf(e)) != nil {
					return
				}
			}
		}
	})
	return nil
}
