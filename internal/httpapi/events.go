package httpapi

import (
	"context"
	"errors"
	"time"

	"github.com/gofiber/fiber/v2"

	"wasessions/internal/events"
	"wasessions/internal/store"
)

// streamEvent is the data of one server-sent event: the fields of
// events.Event with the phone number shown in E.164, as everywhere else in
// the API. Status "none" (with no sessionId) means the user has no session.
type streamEvent struct {
	Type        string `json:"type"`
	SessionID   string `json:"sessionId,omitempty"`
	Status      string `json:"status"`
	Reason      string `json:"reason,omitempty"`
	QRCode      string `json:"qrCode,omitempty"`
	QRRaw       string `json:"qrRaw,omitempty"`
	PairingCode string `json:"pairingCode,omitempty"`
	PhoneNumber string `json:"phoneNumber,omitempty"`
	UserName    string `json:"userName,omitempty"`
	LastError   string `json:"lastError,omitempty"`
	// LastErrorCode is the stable code behind LastError (the sentence).
	LastErrorCode string `json:"lastErrorCode,omitempty"`
	// BannedUntil is when a temporary ban ends (reason temporary_ban);
	// the page shows it. A value, not a pointer: stream events are
	// compared to send only what changed.
	BannedUntil time.Time `json:"bannedUntil,omitzero"`
	At          time.Time `json:"at"`
}

func streamEventOf(e events.Event) streamEvent {
	se := streamEvent{
		Type: e.Type, SessionID: e.SessionID, Status: e.Status, Reason: e.Reason,
		QRCode: e.QRCode, QRRaw: e.QRRaw, PairingCode: e.PairingCode,
		PhoneNumber: store.Str(e164(&e.PhoneNumber)), UserName: e.UserName,
		At: e.At.UTC(),
	}
	if e.LastError != "" {
		code := store.ErrorCode(e.LastError).Known()
		se.LastError, se.LastErrorCode = code.Message(), string(code)
	}
	if e.BannedUntil != nil {
		se.BannedUntil = e.BannedUntil.UTC()
	}
	return se
}

// messageStreamEvent is the data of a message.received or message.status
// event: the status the message reached (read from its status history)
// and the message as GET /messages/{messageId} shows it now, so a client
// needs no second request (the status shown may already be later than
// the one the event announces).
type messageStreamEvent struct {
	Type         string      `json:"type"`
	MessageID    string      `json:"messageId"`
	SessionID    string      `json:"sessionId"`
	Status       string      `json:"status"`
	StatusReason *string     `json:"statusReason"`
	At           time.Time   `json:"at"`
	Message      messageView `json:"message"`
}

// messageEvents reads the message changes a stream was signalled, for the
// stream's user only, from Postgres (the ids and statuses came over Redis
// and are looked up, never shown as they came): a received message is
// message.received, a status an outbound one reached is message.status.
func (s *server) messageEvents(ctx context.Context, userID string, changes []events.MessageChange) ([]messageStreamEvent, error) {
	keys := make([]store.MessageStatusKey, len(changes))
	for i, c := range changes {
		keys[i] = store.MessageStatusKey{MessageID: c.MessageID, Status: c.Status}
	}
	got, err := s.deps.Store.MessageStatusEvents(ctx, userID, keys)
	if err != nil {
		return nil, err
	}
	out := make([]messageStreamEvent, 0, len(got))
	for _, m := range got {
		typ := events.TypeMessageStatus
		if m.Direction == store.DirectionIn {
			typ = events.TypeMessageReceived
		}
		out = append(out, messageStreamEvent{Type: typ, MessageID: m.ID, SessionID: m.SessionID,
			Status: m.Change.Status, StatusReason: m.Change.StatusReason, At: m.Change.At.UTC(),
			Message: messageViewOf(m.Message)})
	}
	return out, nil
}

// shownState is what a stream has shown of the user's session, to send
// only what changed when a change signal comes.
type shownState struct {
	status          streamEvent // At zeroed: compared, not sent
	qrRaw, pairCode string
}

// stateEvents reads the user's current session from Postgres and returns
// the events that bring a client showing prev up to date: the status
// (when it changed), then the QR code or pairing code (when new). With the
// zero prev it is the full current state, sent first on every (re)connect.
// Only Postgres is read: an event on Redis says that something changed,
// never what (anything able to publish there could forge a QR code).
func (s *server) stateEvents(ctx context.Context, userID string, prev shownState) ([]streamEvent, shownState, string, error) {
	sess, err := s.deps.Store.CurrentSession(ctx, userID)
	if errors.Is(err, store.ErrNotFound) {
		st := streamEvent{Type: events.TypeStatus, Status: string(store.StatusNone), Reason: string(store.ReasonNoSession)}
		if prev.status == st {
			return nil, prev, "", nil
		}
		st.At = time.Now().UTC()
		return []streamEvent{st}, shownState{status: streamEvent{Type: st.Type, Status: st.Status, Reason: st.Reason}}, "", nil
	}
	if err != nil {
		return nil, prev, "", err
	}
	var out []streamEvent
	next := prev
	st := streamEventOf(events.FromSession(events.TypeStatus, sess))
	key := st
	key.At = time.Time{}
	if key != prev.status {
		out = append(out, st)
		next.status = key
		// Another session, or a new status: codes shown before are stale.
		next.qrRaw, next.pairCode = "", ""
	}
	if sess.QRCode != nil && store.Str(sess.QRRaw) != next.qrRaw {
		out = append(out, streamEventOf(events.FromSession(events.TypeQR, sess)))
		next.qrRaw = store.Str(sess.QRRaw)
	}
	if sess.PairingCode != nil && *sess.PairingCode != next.pairCode {
		out = append(out, streamEventOf(events.FromSession(events.TypePairingCode, sess)))
		next.pairCode = *sess.PairingCode
	}
	return out, next, sess.SessionID, nil
}

// events is GET /api/integrations/whatsapp/events: a server-sent event
// stream of the caller's session and messages. Workers announce changes on
// Redis pub/sub; the process's one subscription (events.Hub) signals this
// stream when one of its user's sessions changed, or which of its user's
// messages reached which status, and the stream then sends what Postgres
// holds, never what the event said. Any API replica serves any user, and a
// user only ever receives their own session and messages. On every connect
// the current session state goes first, read after the subscription
// began, so nothing falls between the two. Last-Event-ID is not used: the
// current state replaces any replay (and GET /messages lists the messages
// a client missed while away).
//
// A stream whose client reads message events more slowly than they come
// (more than the hub's PendingMessages behind) ends, like one that loses
// Redis: the client reconnects and lists what it missed.
//
// Streams are capped per user and per process (429 above either cap). A
// stream ends when the client goes away (seen at the next write, at the
// latest the next heartbeat), when the hub loses Redis, when the token it
// was opened with expires, or when the server's BaseContext is done
// (shutdown).
func (s *server) events(c *fiber.Ctx) error {
	id := identity(c)
	userID := id.UserID
	// The subscription's start within redisBudget: the stream itself lives
	// on (the context bounds only the hub's subscribing, if it must).
	sctx, scancel := s.redisContext(c.UserContext())
	sub, err := s.deps.Hub.Stream(sctx, userID)
	scancel()
	if err != nil {
		return streamRefused(err)
	}
	first, shown, sessionID, err := s.stateEvents(s.requestContext(), userID, shownState{})
	if err != nil {
		sub.Close()
		return err
	}
	if sessionID != "" {
		noteSession(c, sessionID)
	}

	timeout, log := s.opts.RequestTimeout, s.log
	send := func(w *sseWriter, evs []streamEvent) error {
		for _, e := range evs {
			if err := w.send(e.Type, e); err != nil {
				return err
			}
		}
		return nil
	}
	s.serveStream(c, stream{
		name: "event stream", userID: userID, expires: id.ExpiresAt, sub: sub,
		first: func(w *sseWriter) error { return send(w, first) },
		changed: func(ctx context.Context, w *sseWriter) string {
			changes := sub.Take()
			if changes.Overflow {
				// Fell behind: end, so the client reconnects and lists
				// what it missed, rather than silently skip events.
				return "too many message events pending"
			}
			if changes.Session {
				readCtx, readCancel := context.WithTimeout(ctx, timeout)
				evs, next, _, err := s.stateEvents(readCtx, userID, shown)
				readCancel()
				if err != nil {
					log.Warn("event stream: read the session; ending the stream", "user_id", userID, "error", err)
					return "database read failed"
				}
				shown = next
				if send(w, evs) != nil {
					return clientGone
				}
			}
			if len(changes.Messages) > 0 {
				readCtx, readCancel := context.WithTimeout(ctx, timeout)
				evs, err := s.messageEvents(readCtx, userID, changes.Messages)
				readCancel()
				if err != nil {
					log.Warn("event stream: read messages; ending the stream", "user_id", userID, "error", err)
					return "database read failed"
				}
				for _, e := range evs {
					if w.send(e.Type, e) != nil {
						return clientGone
					}
				}
			}
			return ""
		},
	})
	return nil
}
