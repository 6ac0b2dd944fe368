package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"wasessions/internal/netguard"
	"wasessions/internal/store"
	"wasessions/internal/webhook"
)

// WebhookOptions configure the webhook endpoints' routes.
type WebhookOptions struct {
	// Guard checks endpoint URLs (https only, no private addresses unless
	// allowed); the workers check again at connect time.
	Guard netguard.Guard
	// Sealer encrypts signing secrets for storage (WEBHOOK_SECRET_KEY).
	Sealer *webhook.Sealer
	// MaxEndpoints caps one user's endpoints (default 10).
	MaxEndpoints int
	// RotationOverlap is how long a rotated-out secret keeps signing
	// (default 24h).
	RotationOverlap time.Duration
}

// webhookView is an endpoint as the API shows it; the secret is shown
// only by create and rotate-secret.
type webhookView struct {
	ID             string   `json:"id"`
	URL            string   `json:"url"`
	Events         []string `json:"events"`
	Scope          string   `json:"scope"`
	Enabled        bool     `json:"enabled"`
	DisabledReason *string  `json:"disabledReason"`
	// PreviousSecretUntil: after a rotation, the old secret signs too
	// until then.
	PreviousSecretUntil *time.Time `json:"previousSecretUntil"`
	CreatedAt           time.Time  `json:"createdAt"`
	UpdatedAt           time.Time  `json:"updatedAt"`
}

type webhookSecretView struct {
	webhookView
	Secret string `json:"secret"`
}

type webhookAttemptView struct {
	EventID    string    `json:"eventId"`
	EventType  *string   `json:"eventType"`
	Attempt    int       `json:"attempt"`
	HTTPStatus *int      `json:"httpStatus"`
	LatencyMS  int       `json:"latencyMs"`
	Error      *string   `json:"error"`
	At         time.Time `json:"at"`
}

type webhookAttemptListView struct {
	Deliveries []webhookAttemptView `json:"deliveries"`
	NextCursor *string              `json:"nextCursor"`
}

func webhookViewOf(e store.WebhookEndpoint) webhookView {
	v := webhookView{ID: e.ID, URL: e.URL, Events: e.Events, Scope: e.Scope, Enabled: e.Enabled,
		DisabledReason: e.DisabledReason, CreatedAt: e.CreatedAt.UTC(), UpdatedAt: e.UpdatedAt.UTC()}
	if e.PreviousSecretUntil != nil && e.PreviousSecretUntil.After(time.Now()) {
		v.PreviousSecretUntil = utc(e.PreviousSecretUntil)
	}
	return v
}

// webhookRequest is the body of create (url and events required) and
// PATCH (any of url, events, enabled).
type webhookRequest struct {
	URL     *string   `json:"url"`
	Events  *[]string `json:"events"`
	Enabled *bool     `json:"enabled"`
	Scope   *string   `json:"scope"`
}

func parseWebhookRequest(c *fiber.Ctx) (webhookRequest, error) {
	var req webhookRequest
	mt, _, perr := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	if perr != nil || mt != fiber.MIMEApplicationJSON {
		return req, fail(http.StatusUnsupportedMediaType, "unsupported_media_type",
			"the request body must be JSON with Content-Type: application/json")
	}
	dec := json.NewDecoder(bytes.NewReader(c.Body()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
			return req, fail(http.StatusBadRequest, "invalid_json", "the request body is not valid JSON")
		case errors.As(err, &typ):
			return req, fail(http.StatusBadRequest, "invalid_request", "field "+typ.Field+" has the wrong type")
		default:
			return req, fail(http.StatusBadRequest, "invalid_request", "the request body has an unknown field or is malformed")
		}
	}
	if dec.More() {
		return req, fail(http.StatusBadRequest, "invalid_json", "the request body must be one JSON object")
	}
	if req.Events != nil {
		evs := *req.Events
		if len(evs) == 0 {
			return req, fail(http.StatusBadRequest, "invalid_events", "events must list at least one event type")
		}
		seen := map[string]bool{}
		for _, e := range evs {
			if !slices.Contains(store.WebhookEventTypes(), e) {
				return req, fail(http.StatusBadRequest, "invalid_events",
					"unknown event type "+strconv.Quote(e)+"; use session.status, message.received, message.status")
			}
			seen[e] = true
		}
		out := make([]string, 0, len(seen))
		for _, e := range store.WebhookEventTypes() {
			if seen[e] {
				out = append(out, e)
			}
		}
		*req.Events = out
	}
	return req, nil
}

func (s *server) checkWebhookURL(c *fiber.Ctx, raw string) error {
	ctx := s.requestContext()
	if _, err := s.opts.Webhooks.Guard.CheckURL(ctx, raw); err != nil {
		msg := err.Error()
		if errors.Is(err, netguard.ErrRefused) {
			msg = "the webhook URL is refused: " + msg[len(netguard.ErrRefused.Error())+2:]
		}
		return fail(http.StatusBadRequest, "invalid_webhook_url", msg)
	}
	return nil
}

func (s *server) createWebhook(c *fiber.Ctx) error {
	req, err := parseWebhookRequest(c)
	if err != nil {
		return err
	}
	if req.URL == nil || req.Events == nil {
		return fail(http.StatusBadRequest, "invalid_request", "url and events are required")
	}
	if req.Enabled != nil {
		return fail(http.StatusBadRequest, "invalid_request", "a new endpoint is enabled; set enabled with PATCH")
	}
	scope := store.WebhookScopeUser
	if req.Scope != nil {
		switch *req.Scope {
		case store.WebhookScopeUser:
		case store.WebhookScopeAll:
			if !identity(c).Admin {
				return fail(http.StatusForbidden, "forbidden", `scope "all" needs a token with role admin`)
			}
			scope = store.WebhookScopeAll
		default:
			return fail(http.StatusBadRequest, "invalid_scope", `scope must be "user" or "all"`)
		}
	}
	if err := s.checkWebhookURL(c, *req.URL); err != nil {
		return err
	}
	secret, sealed, err := s.newSealedSecret()
	if err != nil {
		return err
	}
	ctx := s.requestContext()
	e, err := s.deps.Store.CreateWebhookEndpoint(ctx, store.NewWebhookEndpoint{UserID: identity(c).UserID, Scope: scope,
		URL: *req.URL, Events: *req.Events, Secret: sealed}, s.opts.Webhooks.MaxEndpoints)
	if errors.Is(err, store.ErrWebhookLimit) {
		return fail(http.StatusConflict, "webhook_limit",
			"you have "+strconv.Itoa(s.opts.Webhooks.MaxEndpoints)+" webhook endpoints already; delete one first")
	}
	if err != nil {
		return err
	}
	return ok(c, http.StatusCreated, webhookSecretView{webhookView: webhookViewOf(e), Secret: secret},
		"Webhook endpoint created; the secret is shown only now")
}

func (s *server) listWebhooks(c *fiber.Ctx) error {
	ctx := s.requestContext()
	es, err := s.deps.Store.ListWebhookEndpoints(ctx, identity(c).UserID)
	if err != nil {
		return err
	}
	out := make([]webhookView, len(es))
	for i, e := range es {
		out[i] = webhookViewOf(e)
	}
	return ok(c, http.StatusOK, out, "Webhook endpoints")
}

var errWebhookNotFound = fail(http.StatusNotFound, "webhook_not_found", "no such webhook endpoint")

// webhookID is the :id parameter, or a 404 when it cannot be an id.
func webhookID(c *fiber.Ctx) (string, error) {
	id := c.Params("id")
	if _, err := uuid.Parse(id); err != nil {
		return "", errWebhookNotFound
	}
	return id, nil
}

func webhookAnswer(c *fiber.Ctx, e store.WebhookEndpoint, err error, status int, message string) error {
	if errors.Is(err, store.ErrWebhookNotFound) {
		return errWebhookNotFound
	}
	if err != nil {
		return err
	}
	return ok(c, status, webhookViewOf(e), message)
}

func (s *server) getWebhook(c *fiber.Ctx) error {
	id, err := webhookID(c)
	if err != nil {
		return err
	}
	ctx := s.requestContext()
	e, err := s.deps.Store.GetWebhookEndpoint(ctx, identity(c).UserID, id)
	return webhookAnswer(c, e, err, http.StatusOK, "Webhook endpoint")
}

func (s *server) updateWebhook(c *fiber.Ctx) error {
	id, err := webhookID(c)
	if err != nil {
		return err
	}
	req, err := parseWebhookRequest(c)
	if err != nil {
		return err
	}
	if req.Scope != nil {
		return fail(http.StatusBadRequest, "invalid_request", "scope cannot be changed; create a new endpoint")
	}
	if req.URL == nil && req.Events == nil && req.Enabled == nil {
		return fail(http.StatusBadRequest, "invalid_request", "nothing to change: give url, events or enabled")
	}
	if req.URL != nil {
		if err := s.checkWebhookURL(c, *req.URL); err != nil {
			return err
		}
	}
	p := store.WebhookPatch{URL: req.URL, Enabled: req.Enabled}
	if req.Events != nil {
		p.Events = *req.Events
	}
	ctx := s.requestContext()
	e, err := s.deps.Store.UpdateWebhookEndpoint(ctx, identity(c).UserID, id, p)
	return webhookAnswer(c, e, err, http.StatusOK, "Webhook endpoint updated")
}

func (s *server) deleteWebhook(c *fiber.Ctx) error {
	id, err := webhookID(c)
	if err != nil {
		return err
	}
	ctx := s.requestContext()
	if err := s.deps.Store.DeleteWebhookEndpoint(ctx, identity(c).UserID, id); err != nil {
		if errors.Is(err, store.ErrWebhookNotFound) {
			return errWebhookNotFound
		}
		return err
	}
	return ok(c, http.StatusOK, map[string]string{"id": id}, "Webhook endpoint deleted")
}

func (s *server) rotateWebhookSecret(c *fiber.Ctx) error {
	id, err := webhookID(c)
	if err != nil {
		return err
	}
	secret, sealed, err := s.newSealedSecret()
	if err != nil {
		return err
	}
	ctx := s.requestContext()
	e, err := s.deps.Store.RotateWebhookSecret(ctx, identity(c).UserID, id, sealed, s.opts.Webhooks.RotationOverlap)
	if errors.Is(err, store.ErrWebhookNotFound) {
		return errWebhookNotFound
	}
	if err != nil {
		return err
	}
	return ok(c, http.StatusOK, webhookSecretView{webhookView: webhookViewOf(e), Secret: secret},
		"New secret; the previous one keeps signing until previousSecretUntil")
}

func encodeAttemptCursor(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("a" + strconv.FormatInt(id, 10)))
}

func decodeAttemptCursor(s string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 2 || b[0] != 'a' {
		return 0, errors.New("bad cursor")
	}
	n, err := strconv.ParseInt(string(b[1:]), 10, 64)
	if err != nil || n <= 0 {
		return 0, errors.New("bad cursor")
	}
	return n, nil
}

func (s *server) webhookDeliveries(c *fiber.Ctx) error {
	id, err := webhookID(c)
	if err != nil {
		return err
	}
	var before int64
	if cur := c.Query("cursor"); cur != "" {
		if before, err = decodeAttemptCursor(cur); err != nil {
			return fail(http.StatusBadRequest, "invalid_cursor", "cursor is not one this API returned")
		}
	}
	ctx := s.requestContext()
	if _, err := s.deps.Store.GetWebhookEndpoint(ctx, identity(c).UserID, id); err != nil {
		if errors.Is(err, store.ErrWebhookNotFound) {
			return errWebhookNotFound
		}
		return err
	}
	atts, more, err := s.deps.Store.ListWebhookAttempts(ctx, id, before, defaultPageSize)
	if err != nil {
		return err
	}
	out := webhookAttemptListView{Deliveries: make([]webhookAttemptView, len(atts))}
	for i, a := range atts {
		out.Deliveries[i] = webhookAttemptView{EventID: a.EventID, EventType: a.EventType, Attempt: a.Attempt,
			HTTPStatus: a.HTTPStatus, LatencyMS: a.LatencyMS, Error: a.Error, At: a.At.UTC()}
	}
	if more {
		cur := encodeAttemptCursor(atts[len(atts)-1].ID)
		out.NextCursor = &cur
	}
	return ok(c, http.StatusOK, out, "Recent delivery attempts, newest first")
}

func (s *server) replayWebhookEvent(c *fiber.Ctx) error {
	id, err := webhookID(c)
	if err != nil {
		return err
	}
	eventID := c.Params("eventId")
	notFound := fail(http.StatusNotFound, "event_not_found", "no such event for this endpoint")
	if _, err := uuid.Parse(eventID); err != nil {
		return notFound
	}
	ctx := s.requestContext()
	if _, err := s.deps.Store.GetWebhookEndpoint(ctx, identity(c).UserID, id); err != nil {
		if errors.Is(err, store.ErrWebhookNotFound) {
			return errWebhookNotFound
		}
		return err
	}
	if err := s.deps.Store.ReplayWebhookEvent(ctx, identity(c).UserID, id, eventID); err != nil {
		if errors.Is(err, store.ErrWebhookNotFound) {
			return notFound
		}
		return err
	}
	return ok(c, http.StatusAccepted, map[string]string{"eventId": eventID, "webhookId": eventID},
		"Replay queued; it is delivered with the same webhook-id")
}

// newSealedSecret makes an endpoint's signing secret: the one the user is
// shown once, and the form it is stored in (sealed when WEBHOOK_SECRET_KEY
// is set).
func (s *server) newSealedSecret() (secret string, sealed string, err error) {
	secret, err = webhook.NewSecret()
	if err != nil {
		return "", "", err
	}
	sealed, err = s.opts.Webhooks.Sealer.Seal(secret)
	if err != nil {
		return "", "", err
	}
	return secret, sealed, nil
}
