package httpapi

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"wasessions/internal/queue"
	"wasessions/internal/reqparse"
	"wasessions/internal/store"
	"wasessions/internal/views"
	"wasessions/tasks"
)

// Message limits.
const (
	// MaxTextLength is the longest text accepted, in characters.
	MaxTextLength = reqparse.MaxMessageText
	// maxIdempotencyKey bounds the Idempotency-Key header.
	maxIdempotencyKey = 255
	defaultPageSize   = 20
	maxPageSize       = 100
)

// messageView is a message as the API shows it (internal/views: webhook
// events carry the same view).
type messageView struct {
	views.Message
}

type messageStatusView struct {
	Status       string    `json:"status"`
	StatusReason *string   `json:"statusReason"`
	At           time.Time `json:"at"`
}

type messageDetailView struct {
	messageView
	History []messageStatusView `json:"history"`
}

type messageListView struct {
	Messages   []messageView `json:"messages"`
	NextCursor *string       `json:"nextCursor"`
}

func messageViewOf(m store.Message) messageView {
	return messageView{views.MessageOf(m)}
}

// parseSend reads POST /messages' body as it came on the wire
// (c.Request().Body(), never decompressed); the parsing is reqparse's
// (fuzzed in make test).
func parseSend(c *fiber.Ctx) (to, text string, err error) {
	req, err := reqparse.ParseSendMessage(c.Get(fiber.HeaderContentType), c.Request().Body())
	if err != nil {
		return "", "", refusal(err)
	}
	return req.To, req.Text, nil
}

func idempotencyKey(c *fiber.Ctx) (string, error) {
	k := strings.TrimSpace(c.Get("Idempotency-Key"))
	if len(k) > maxIdempotencyKey {
		return "", fail(http.StatusBadRequest, "invalid_idempotency_key", "Idempotency-Key must be at most 255 characters")
	}
	for _, r := range k {
		if r < 0x21 || r > 0x7e {
			return "", fail(http.StatusBadRequest, "invalid_idempotency_key", "Idempotency-Key must be printable ASCII without spaces")
		}
	}
	return strings.Clone(k), nil
}

// sendMessage is POST /api/integrations/whatsapp/messages: queue a text
// through the caller's linked session (202). The message row is committed
// first; only then is the worker hosting the session woken. If that wake-up
// cannot be enqueued, the message still goes out: the reconciler (or the
// next host, on claim) finds queued messages with no task on the way.
func (s *server) sendMessage(c *fiber.Ctx) error {
	to, text, err := parseSend(c)
	if err != nil {
		return err
	}
	key, err := idempotencyKey(c)
	if err != nil {
		return err
	}
	ctx := s.requestContext()
	userID := identity(c).UserID
	m, created, err := s.deps.Store.QueueOutbound(ctx, store.NewOutbound{UserID: userID, To: to, Text: text, IdempotencyKey: key})
	switch {
	case errors.Is(err, store.ErrNotLinked):
		return fail(http.StatusConflict, "session_not_linked", "no linked WhatsApp session; link one with POST /api/integrations/whatsapp/session")
	case errors.Is(err, store.ErrIdempotencyMismatch):
		return fail(http.StatusUnprocessableEntity, "idempotency_key_reused",
			"this Idempotency-Key was used in the last 24 hours for a different message")
	case err != nil:
		return err
	}
	noteSession(c, m.SessionID)
	if !created {
		return ok(c, http.StatusOK, messageViewOf(m), "Message already accepted with this Idempotency-Key")
	}
	s.wakeSender(ctx, m)
	return ok(c, http.StatusAccepted, messageViewOf(m), "Message queued")
}

// wakeSender tells the worker hosting m's session that its outbox has work.
// No host (the session is between workers): the next host drains the
// outbox when it claims the session. Failures are logged, never returned:
// the message is durable and the reconciler wakes its sender later.
func (s *server) wakeSender(ctx context.Context, m store.Message) {
	sess, err := s.deps.Store.Get(ctx, m.SessionID)
	if err != nil {
		s.log.WarnContext(ctx, "send: read session to wake its sender", "session_id", m.SessionID, "error", err)
		return
	}
	q := queue.ForSession(sess)
	if q == tasks.QueueShared {
		return // no host: the next one drains the outbox when it claims it
	}
	j, err := tasks.NewSend(m.SessionID, m.ID, q)
	if err == nil {
		err = s.enqueue(ctx, j)
	}
	if err != nil {
		s.log.WarnContext(ctx, "send: wake the sender; the reconciler will", "session_id", m.SessionID, "error", err)
	}
}

// listMessages is GET /api/integrations/whatsapp/messages: the caller's
// messages, newest first, a page at a time.
func (s *server) listMessages(c *fiber.Ctx) error {
	f := store.MessageFilter{Limit: defaultPageSize}
	switch d := c.Query("direction"); d {
	case "", store.DirectionIn, store.DirectionOut:
		f.Direction = d
	default:
		return fail(http.StatusBadRequest, "invalid_direction", "direction must be in or out")
	}
	if chat := c.Query("chat"); chat != "" {
		if !reqparse.E164(chat) {
			return fail(http.StatusBadRequest, "invalid_phone_number", "chat must be a phone number in E.164 format, e.g. +15557654321")
		}
		f.Chat = chat
	}
	if l := c.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxPageSize {
			return fail(http.StatusBadRequest, "invalid_limit", "limit must be an integer from 1 to 100")
		}
		f.Limit = n
	}
	if cur := c.Query("cursor"); cur != "" {
		seq, err := decodeCursor(cur)
		if err != nil {
			return fail(http.StatusBadRequest, "invalid_cursor", "cursor is not one this API returned")
		}
		f.BeforeSeq = seq
	}
	ctx := s.requestContext()
	msgs, more, err := s.deps.Store.ListMessages(ctx, identity(c).UserID, f)
	if err != nil {
		return err
	}
	out := messageListView{Messages: make([]messageView, len(msgs))}
	for i, m := range msgs {
		out.Messages[i] = messageViewOf(m)
	}
	if more {
		cur := encodeCursor(msgs[len(msgs)-1].Seq)
		out.NextCursor = &cur
	}
	return ok(c, http.StatusOK, out, "Messages")
}

// getMessage is GET /api/integrations/whatsapp/messages/{messageId}: one of
// the caller's messages with its status history; anyone else's is 404.
func (s *server) getMessage(c *fiber.Ctx) error {
	id := c.Params("messageId")
	notFound := fail(http.StatusNotFound, "message_not_found", "no such message")
	if _, err := uuid.Parse(id); err != nil {
		return notFound
	}
	ctx := s.requestContext()
	m, err := s.deps.Store.GetMessage(ctx, identity(c).UserID, id)
	if errors.Is(err, store.ErrMessageNotFound) {
		return notFound
	}
	if err != nil {
		return err
	}
	hist, err := s.deps.Store.MessageHistory(ctx, m.ID)
	if err != nil {
		return err
	}
	out := messageDetailView{messageView: messageViewOf(m), History: make([]messageStatusView, len(hist))}
	for i, h := range hist {
		out.History[i] = messageStatusView{Status: h.Status, StatusReason: h.StatusReason, At: h.At.UTC()}
	}
	return ok(c, http.StatusOK, out, "Message")
}

// Cursors are opaque to clients: the seq of the last message of a page.
func encodeCursor(seq int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("m" + strconv.FormatInt(seq, 10)))
}

func decodeCursor(s string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 2 || b[0] != 'm' {
		return 0, errors.New("bad cursor")
	}
	n, err := strconv.ParseInt(string(b[1:]), 10, 64)
	if err != nil || n <= 0 {
		return 0, errors.New("bad cursor")
	}
	return n, nil
}
