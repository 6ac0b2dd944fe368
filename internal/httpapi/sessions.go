package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5/pgconn"

	"wasessions/internal/events"
	"wasessions/internal/reqparse"
	"wasessions/internal/store"
	"wasessions/internal/views"
	"wasessions/tasks"
)

// sessionView is a session as the API shows it (internal/views: webhook
// events carry the same view).
type sessionView struct {
	views.Session
}

// createView is what POST /session answers: the session and, as in the
// seed, its QR code (null until the worker has one, or for phone pairing).
type createView struct {
	sessionView
	QRCode *string `json:"qrCode"`
	QRRaw  *string `json:"qrRaw"`
}

// qrView is what GET /qr answers.
type qrView struct {
	SessionID string     `json:"sessionId"`
	Status    string     `json:"status"`
	QRCode    string     `json:"qrCode"`
	QRRaw     string     `json:"qrRaw"`
	ExpiresAt *time.Time `json:"expiresAt"`
	UpdatedAt time.Time  `json:"updatedAt"`
}

func viewOf(s store.Session) sessionView {
	return sessionView{views.SessionOf(s)}
}

func createViewOf(s store.Session) createView {
	return createView{sessionView: viewOf(s), QRCode: s.QRCode, QRRaw: s.QRRaw}
}

func utc(t *time.Time) *time.Time { return views.UTC(t) }

// e164 shows a phone number with its leading '+' (views.E164).
func e164(p *string) *string { return views.E164(p) }

// ended reports whether nothing will ever happen to s again, or the user
// asked for it to end: a QR for it is useless.
func ended(s store.Session) bool {
	return !s.Status.Live() || s.DesiredState == store.DesiredGone
}

// parseCreate reads the optional JSON body as it came on the wire:
// c.Request().Body(), never c.Body(), which would decompress it without
// a size cap (refuseEncodedBodies has already refused encoded bodies).
// The parsing itself is reqparse's (fuzzed in make test).
func parseCreate(c *fiber.Ctx) (reqparse.CreateSession, error) {
	req, err := reqparse.ParseCreateSession(c.Get(fiber.HeaderContentType), c.Request().Body())
	return req, refusal(err)
}

// createSession is POST /api/integrations/whatsapp/session: the caller's
// live session if there is one (200), else a new one (201), whose first QR
// code (or pairing code) it waits for, up to QRWait.
//
// The row is committed before the task is enqueued and never the other way
// round: a failed enqueue (Redis down) leaves a durable pending row that
// the reconciler, or the client's retry, enqueues later; the client gets a
// 503 now and the same session, 200, on retry.
func (s *server) createSession(c *fiber.Ctx) error {
	req, err := parseCreate(c)
	if err != nil {
		return err
	}
	id := identity(c)
	ctx := s.requestContext()
	if err := s.limitNewSession(ctx, id.UserID, req); err != nil {
		return err
	}

	n := store.NewSession{UserID: id.UserID, TTL: s.opts.SessionTTL}
	if req.PhoneNumber != nil {
		n.PairPhone = *req.PhoneNumber
	}
	sess, created, err := s.insert(ctx, n)
	if err != nil {
		return err
	}
	noteSession(c, sess.SessionID)

	if !created {
		// A pending session no worker holds has no task on its way, or it
		// was lost: queue it again (deduplicated by task id, so a task that
		// is on its way is not doubled). A failure here is only logged: the
		// session exists and the reconciler covers it.
		if sess.Status == store.StatusPending && !sess.LeaseLive {
			if err := s.enqueueCreate(ctx, sess, "api_retry"); err != nil {
				s.log.WarnContext(ctx, "create: re-enqueue pending session", "session_id", sess.SessionID, "error", err)
			}
		}
		return ok(c, http.StatusOK, createViewOf(sess), "Existing WhatsApp session returned")
	}

	// Subscribe before enqueueing, so the worker's first event cannot slip
	// past between the two.
	var sub *events.Listener
	if s.opts.QRWait > 0 {
		sctx, scancel := s.redisContext(ctx)
		sub, err = s.deps.Hub.Subscribe(sctx, id.UserID)
		scancel()
		if err != nil {
			return queueUnavailable(err, "the session was recorded but Redis is unavailable; retry to get it",
				fiber.Map{"sessionId": sess.SessionID})
		}
		defer sub.Close()
	}
	if err := s.enqueueCreate(ctx, sess, "created"); err != nil {
		return queueUnavailable(err, "the session was recorded but could not be queued (Redis is unavailable); retry to get it",
			fiber.Map{"sessionId": sess.SessionID})
	}
	if sub != nil {
		sess = s.waitFirst(ctx, sub, sess)
	}
	return ok(c, http.StatusCreated, createViewOf(sess), "WhatsApp session created")
}

// insert creates the session with a fresh id; a same-millisecond id clash
// with an older session of the user (the only unique violation left once
// the live-session index has arbitrated) is retried with a new id.
func (s *server) insert(ctx context.Context, n store.NewSession) (store.Session, bool, error) {
	for attempt := 0; ; attempt++ {
		n.SessionID = fmt.Sprintf("whatsapp_%s_%d", n.UserID, s.opts.Now().UnixMilli())
		sess, created, err := s.deps.Store.CreateSession(ctx, n)
		var pgErr *pgconn.PgError
		if err != nil && errors.As(err, &pgErr) && pgErr.Code == "23505" && attempt < 3 {
			// A new millisecond gives a new id; the request may end first.
			select {
			case <-time.After(time.Millisecond):
			case <-ctx.Done():
				return store.Session{}, false, ctx.Err()
			}
			continue
		}
		return sess, created, err
	}
}

func (s *server) enqueueCreate(ctx context.Context, sess store.Session, reason string) error {
	j, err := tasks.NewCreate(sess.SessionID, sess.LeaseEpoch, reason)
	if err != nil {
		return err
	}
	return s.enqueue(ctx, j)
}

// enqueue hands j to asynq and counts the outcome, within redisBudget
// (and the request's deadline), so a hung Redis answers the caller's
// documented outage answer promptly.
func (s *server) enqueue(ctx context.Context, j tasks.Job) error {
	ctx, cancel := s.redisContext(ctx)
	defer cancel()
	res, err := s.deps.Enqueuer.Enqueue(ctx, j, false)
	if err != nil {
		s.metrics.ObserveEnqueue(j.Task.Type(), "error")
		return redisFailure(err)
	}
	s.metrics.ObserveEnqueue(j.Task.Type(), res.String())
	return nil
}

// waitFirst waits up to QRWait for the new session sess to be worth
// showing: its first QR or pairing code, its link, or its end. Each change
// signal is checked against the row in Postgres (an event's contents are
// never trusted), and the row as last read is returned: it holds the QR
// even if its signal was missed.
func (s *server) waitFirst(ctx context.Context, sub *events.Listener, sess store.Session) store.Session {
	t := time.NewTimer(s.opts.QRWait)
	defer t.Stop()
	read := func() bool {
		fresh, err := s.deps.Store.GetForUser(ctx, sess.UserID, sess.SessionID)
		if err != nil {
			s.log.WarnContext(ctx, "create: re-read session", "session_id", sess.SessionID, "error", err)
			return true
		}
		sess = fresh
		return sess.QRCode != nil || sess.PairingCode != nil || sess.Status == store.StatusConnected || !sess.Status.Live()
	}
	for {
		select {
		case <-t.C:
			read()
			return sess
		case <-ctx.Done():
			return sess
		case _, open := <-sub.C:
			if read() || !open {
				return sess
			}
		}
	}
}

// errNoSession is the 404 of a user who never created a session.
func errNoSession() *apiError {
	return fail(http.StatusNotFound, codeSessionNotFound, "no WhatsApp session; create one with POST /api/integrations/whatsapp/session")
}

// current is the caller's current session, or the 404 that says there is
// none.
func (s *server) current(ctx context.Context, c *fiber.Ctx) (store.Session, error) {
	sess, err := s.deps.Store.CurrentSession(ctx, identity(c).UserID)
	if errors.Is(err, store.ErrNotFound) {
		return sess, errNoSession()
	}
	if err != nil {
		return sess, err
	}
	noteSession(c, sess.SessionID)
	return sess, nil
}

// status is GET /api/integrations/whatsapp/status: the caller's current
// session (the live one, else the latest).
//
// Clients poll it, so it reads only the columns it shows (never the QR
// image) and scans them without reflection (store.CurrentStatus), and
// encodes its answer without reflection (okSession).
func (s *server) status(c *fiber.Ctx) error {
	ctx := s.requestContext()
	sess, err := s.deps.Store.CurrentStatus(ctx, identity(c).UserID)
	if errors.Is(err, store.ErrNotFound) {
		return errNoSession()
	}
	if err != nil {
		return err
	}
	noteSession(c, sess.SessionID)
	return okSession(c, views.StatusOf(sess), "WhatsApp session status")
}

// qr is GET /api/integrations/whatsapp/qr: the QR code to scan now, or a
// code that says why there is none.
func (s *server) qr(c *fiber.Ctx) error {
	ctx := s.requestContext()
	sess, err := s.current(ctx, c)
	if err != nil {
		return err
	}
	switch {
	case ended(sess):
		return fail(http.StatusGone, "session_ended", "the session has ended ("+string(sess.Status)+"); create a new one")
	case sess.IsAuthenticated || sess.Status == store.StatusConnected || sess.Status == store.StatusReconnecting:
		return fail(http.StatusConflict, "already_linked", "the session is already linked; no QR code is needed")
	case sess.PairPhone != nil && sess.QRCode == nil:
		return fail(http.StatusConflict, "pairing_code_session", "the session pairs by phone code; see pairingCode in the status")
	case sess.QRCode == nil:
		return fail(http.StatusConflict, "qr_not_ready", "the QR code is not ready yet; retry shortly or listen to the events stream")
	}
	return ok(c, http.StatusOK, qrView{
		SessionID: sess.SessionID, Status: string(sess.Status),
		QRCode: *sess.QRCode, QRRaw: store.Str(sess.QRRaw),
		ExpiresAt: utc(sess.ExpiresAt), UpdatedAt: sess.UpdatedAt.UTC(),
	}, "Scan the QR code with WhatsApp")
}

// disconnect is POST /api/integrations/whatsapp/disconnect. The intent is
// recorded in Postgres first (desired state gone); the worker hosting the
// session, reached through its own queue while its lease is live, logs the
// device out and ends the row: 202. A disconnect already recorded but not
// yet carried out is queued again (idempotent): 202. A session already
// ended: 200 with its status. No session: 404.
func (s *server) disconnect(c *fiber.Ctx) error {
	ctx := s.requestContext()
	userID := identity(c).UserID
	changed, err := s.deps.Store.RequestDisconnect(ctx, userID)
	if err != nil {
		return err
	}
	if len(changed) == 0 {
		cur, err := s.current(ctx, c)
		if err != nil {
			return err
		}
		if cur.DesiredState != store.DesiredGone || !(cur.Status.Live() || cur.DeviceJID != nil) {
			return ok(c, http.StatusOK, viewOf(cur), "The WhatsApp session is already disconnected")
		}
		changed = []store.Session{cur}
	}
	for _, sess := range changed {
		if err := s.dispatchDisconnect(ctx, sess); err != nil {
			return err
		}
	}
	noteSession(c, changed[0].SessionID)
	return ok(c, http.StatusAccepted, viewOf(changed[0]), "Disconnect requested; the session is being logged out")
}
