package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Webhooks: endpoints, and the outbox the triggers of
// migrations/00019_webhooks.sql fill (docs/ARCHITECTURE.md "Webhooks").
// Events and their deliveries are never written from Go: the triggers
// write them in the transaction of the change they report.

// Webhook errors callers branch on.
var (
	// ErrWebhookNotFound: no such endpoint or event (or not the caller's).
	ErrWebhookNotFound = errors.New("store: webhook endpoint not found")
	// ErrWebhookLimit: the user has as many endpoints as allowed.
	ErrWebhookLimit = errors.New("store: webhook endpoint limit reached")
	// ErrWebhookNotDue: the delivery is not the one to attempt now (done,
	// not its turn, in flight elsewhere, or its endpoint is off).
	ErrWebhookNotDue = errors.New("store: webhook delivery not due")
	// ErrWebhookBusy: the endpoint has as many attempts in flight as allowed.
	ErrWebhookBusy = errors.New("store: webhook endpoint busy")
)

// Webhook event types (webhook_events.type).
const (
	EventSessionStatus   = "session.status"
	EventMessageReceived = "message.received"
	EventMessageStatus   = "message.status"
)

// WebhookEventTypes lists every event type an endpoint can ask for.
func WebhookEventTypes() []string {
	return []string{EventSessionStatus, EventMessageReceived, EventMessageStatus}
}

// Webhook endpoint scopes: a user's own events, or (admins only) every
// user's.
const (
	WebhookScopeUser = "user"
	WebhookScopeAll  = "all"
)

// Why the service turned an endpoint off.
const (
	WebhookDisabledGone    = "gone"    // it answered 410 Gone
	WebhookDisabledFailing = "failing" // every attempt failed for WEBHOOK_DISABLE_AFTER
)

// WebhookEndpoint is a registered receiver. Secret and PreviousSecret are
// as stored (encrypted when the service has a key); never log them.
type WebhookEndpoint struct {
	ID                  string     `db:"id"`
	UserID              string     `db:"user_id"`
	Scope               string     `db:"scope"`
	URL                 string     `db:"url"`
	Events              []string   `db:"events"`
	Enabled             bool       `db:"enabled"`
	DisabledReason      *string    `db:"disabled_reason"`
	Secret              string     `db:"secret"`
	PreviousSecret      *string    `db:"previous_secret"`
	PreviousSecretUntil *time.Time `db:"previous_secret_until"`
	FailingSince        *time.Time `db:"failing_since"`
	CreatedAt           time.Time  `db:"created_at"`
	UpdatedAt           time.Time  `db:"updated_at"`
}

const webhookEndpointColumns = `id, user_id, scope, url, events, enabled, disabled_reason, secret,
	previous_secret, previous_secret_until, failing_since, created_at, updated_at`

func collectEndpoint(rows pgx.Rows) (WebhookEndpoint, error) {
	e, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[WebhookEndpoint])
	if errors.Is(err, pgx.ErrNoRows) {
		return WebhookEndpoint{}, ErrWebhookNotFound
	}
	return e, err
}

// NewWebhookEndpoint is what CreateWebhookEndpoint stores.
type NewWebhookEndpoint struct {
	UserID string
	Scope  string
	URL    string
	Events []string
	Secret string
}

// CreateWebhookEndpoint stores an endpoint unless the user already has max
// (ErrWebhookLimit). Creates of one user are serialised, so the cap holds
// under concurrent requests.
func (s *Store) CreateWebhookEndpoint(ctx context.Context, n NewWebhookEndpoint, max int) (WebhookEndpoint, error) {
	var e WebhookEndpoint
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO users (id) VALUES ($1) ON CONFLICT (id) DO NOTHING`, n.UserID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT id FROM users WHERE id = $1 FOR UPDATE`, n.UserID); err != nil {
			return err
		}
		var count int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM webhook_endpoints WHERE user_id = $1`, n.UserID).Scan(&count); err != nil {
			return err
		}
		if count >= max {
			return ErrWebhookLimit
		}
		rows, err := tx.Query(ctx, `INSERT INTO webhook_endpoints (user_id, scope, url, events, secret)
			VALUES ($1, $2, $3, $4, $5) RETURNING `+webhookEndpointColumns, n.UserID, n.Scope, n.URL, n.Events, n.Secret)
		if err != nil {
			return err
		}
		e, err = collectEndpoint(rows)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrWebhookLimit) {
			return e, err
		}
		return e, fmt.Errorf("store: create webhook endpoint: %w", err)
	}
	return e, nil
}

// GetWebhookEndpoint returns the user's endpoint id.
func (s *Store) GetWebhookEndpoint(ctx context.Context, userID, id string) (WebhookEndpoint, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+webhookEndpointColumns+` FROM webhook_endpoints
		WHERE id = $1 AND user_id = $2`, id, userID)
	if err != nil {
		return WebhookEndpoint{}, fmt.Errorf("store: get webhook endpoint: %w", err)
	}
	return collectEndpoint(rows)
}

// WebhookEndpointByID returns endpoint id whoever owns it (the delivery
// side).
func (s *Store) WebhookEndpointByID(ctx context.Context, id string) (WebhookEndpoint, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+webhookEndpointColumns+` FROM webhook_endpoints WHERE id = $1`, id)
	if err != nil {
		return WebhookEndpoint{}, fmt.Errorf("store: webhook endpoint: %w", err)
	}
	return collectEndpoint(rows)
}

// ListWebhookEndpoints returns the user's endpoints, oldest first (at most
// the per-user cap, so no paging).
func (s *Store) ListWebhookEndpoints(ctx context.Context, userID string) ([]WebhookEndpoint, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+webhookEndpointColumns+` FROM webhook_endpoints
		WHERE user_id = $1 ORDER BY created_at, id`, userID)
	if err != nil {
		return nil, fmt.Errorf("store: list webhook endpoints: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[WebhookEndpoint])
	if err != nil {
		return nil, fmt.Errorf("store: list webhook endpoints: %w", err)
	}
	return out, nil
}

// WebhookPatch changes an endpoint; nil fields are kept.
type WebhookPatch struct {
	URL     *string
	Events  []string
	Enabled *bool
}

// UpdateWebhookEndpoint applies p to the user's endpoint. Turning an
// endpoint on clears why the service turned it off and its failure clock;
// its held-back deliveries go out again in order.
func (s *Store) UpdateWebhookEndpoint(ctx context.Context, userID, id string, p WebhookPatch) (WebhookEndpoint, error) {
	rows, err := s.pool.Query(ctx, `UPDATE webhook_endpoints SET
			url = COALESCE($3, url),
			events = COALESCE($4, events),
			enabled = COALESCE($5, enabled),
			disabled_reason = CASE WHEN $5::boolean IS NULL THEN disabled_reason ELSE NULL END,
			failing_since = CASE WHEN $5::boolean THEN NULL ELSE failing_since END,
			updated_at = now()
		WHERE id = $1 AND user_id = $2 RETURNING `+webhookEndpointColumns, id, userID, p.URL, p.Events, p.Enabled)
	if err != nil {
		return WebhookEndpoint{}, fmt.Errorf("store: update webhook endpoint: %w", err)
	}
	return collectEndpoint(rows)
}

// DeleteWebhookEndpoint removes the user's endpoint with its deliveries.
func (s *Store) DeleteWebhookEndpoint(ctx context.Context, userID, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM webhook_endpoints WHERE id = $1 AND user_id = $2`, id, userID)
	if err != nil {
		return fmt.Errorf("store: delete webhook endpoint: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrWebhookNotFound
	}
	return nil
}

// RotateWebhookSecret makes secret the endpoint's signing secret; the
// current one keeps signing alongside it for overlap.
func (s *Store) RotateWebhookSecret(ctx context.Context, userID, id, secret string, overlap time.Duration) (WebhookEndpoint, error) {
	rows, err := s.pool.Query(ctx, `UPDATE webhook_endpoints SET
			previous_secret = secret, previous_secret_until = now() + $4::interval,
			secret = $3, updated_at = now()
		WHERE id = $1 AND user_id = $2 RETURNING `+webhookEndpointColumns, id, userID, secret, overlap)
	if err != nil {
		return WebhookEndpoint{}, fmt.Errorf("store: rotate webhook secret: %w", err)
	}
	return collectEndpoint(rows)
}

// WebhookAttempt is one HTTP attempt of an event to an endpoint.
type WebhookAttempt struct {
	ID         int64     `db:"id"`
	EventID    string    `db:"event_id"`
	EventType  *string   `db:"event_type"`
	Attempt    int       `db:"attempt"`
	HTTPStatus *int      `db:"http_status"`
	LatencyMS  int       `db:"latency_ms"`
	Error      *string   `db:"error"`
	At         time.Time `db:"at"`
}

// ListWebhookAttempts returns the endpoint's attempts, newest first, with
// ids below before (0: from the newest), at most limit; more says whether
// older ones exist. The caller checks the endpoint is the user's.
func (s *Store) ListWebhookAttempts(ctx context.Context, endpointID string, before int64, limit int) (out []WebhookAttempt, more bool, err error) {
	rows, err := s.pool.Query(ctx, `SELECT a.id, a.event_id::text AS event_id, ev.type AS event_type, a.attempt,
			a.http_status, a.latency_ms, a.error, a.at
		FROM webhook_attempts a LEFT JOIN webhook_events ev ON ev.id = a.event_id
		WHERE a.endpoint_id = $1 AND ($2 = 0 OR a.id < $2)
		ORDER BY a.id DESC LIMIT $3`, endpointID, before, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("store: list webhook attempts: %w", err)
	}
	out, err = pgx.CollectRows(rows, pgx.RowToStructByName[WebhookAttempt])
	if err != nil {
		return nil, false, fmt.Errorf("store: list webhook attempts: %w", err)
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

// ReplayWebhookEvent makes the event due again at once for the user's
// endpoint, with a fresh attempt budget: the same event id, hence the
// same webhook-id and body. The event must be one the endpoint may see
// (its user's, or any for an admin's "all" endpoint). It is pending again,
// so it takes its place by sequence: the session's later undelivered
// events to that endpoint wait behind it (docs/DESIGN-NOTES.md, "A replay
// takes its place by sequence").
func (s *Store) ReplayWebhookEvent(ctx context.Context, userID, endpointID, eventID string) error {
	tag, err := s.pool.Exec(ctx, `INSERT INTO webhook_deliveries (endpoint_id, event_id, session_id, sequence)
		SELECT e.id, ev.id, ev.session_id, ev.sequence
		FROM webhook_endpoints e JOIN webhook_events ev ON ev.id = $3
		WHERE e.id = $2 AND e.user_id = $1 AND (ev.user_id = e.user_id OR e.scope = 'all')
		ON CONFLICT (endpoint_id, event_id) DO UPDATE SET status = 'pending', attempts = 0,
			next_attempt_at = clock_timestamp(), lease_until = NULL, delivered_at = NULL`,
		userID, endpointID, eventID)
	if err != nil {
		return fmt.Errorf("store: replay webhook event: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrWebhookNotFound
	}
	_, _ = s.pool.Exec(ctx, `SELECT pg_notify('wasessions_webhooks', '')`)
	return nil
}

// DueWebhook is a delivery to attempt now: the head (lowest pending
// sequence) of its session's deliveries to its endpoint. Attempts is how
// many attempts it has had; the task for the next one names it.
type DueWebhook struct {
	EndpointID string `db:"endpoint_id"`
	EventID    string `db:"event_id"`
	Attempts   int    `db:"attempts"`
}

// DueWebhooks lists deliveries to attempt now, at most limit, and at most
// perEndpoint in flight per endpoint (counting those already in flight):
// one endpoint's backlog cannot crowd out the others.
func (s *Store) DueWebhooks(ctx context.Context, perEndpoint, limit int) ([]DueWebhook, error) {
	rows, err := s.pool.Query(ctx, `WITH heads AS (
			SELECT DISTINCT ON (d.endpoint_id, d.session_id) d.endpoint_id, d.event_id, d.attempts,
				d.next_attempt_at, d.lease_until
			FROM webhook_deliveries d
			WHERE d.status = 'pending'
			ORDER BY d.endpoint_id, d.session_id, d.sequence
		), busy AS (
			SELECT endpoint_id, count(*) FILTER (WHERE lease_until > now()) AS inflight
			FROM heads GROUP BY endpoint_id
		), due AS (
			SELECT h.endpoint_id, h.event_id, h.attempts, h.next_attempt_at,
				row_number() OVER (PARTITION BY h.endpoint_id ORDER BY h.next_attempt_at, h.event_id) AS rn
			FROM heads h JOIN webhook_endpoints e ON e.id = h.endpoint_id AND e.enabled
			WHERE h.next_attempt_at <= now() AND (h.lease_until IS NULL OR h.lease_until <= now())
		)
		SELECT due.endpoint_id::text AS endpoint_id, due.event_id::text AS event_id, due.attempts
		FROM due JOIN busy USING (endpoint_id)
		WHERE due.rn + busy.inflight <= $1
		ORDER BY due.next_attempt_at LIMIT $2`, perEndpoint, limit)
	if err != nil {
		return nil, fmt.Errorf("store: due webhooks: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[DueWebhook])
	if err != nil {
		return nil, fmt.Errorf("store: due webhooks: %w", err)
	}
	return out, nil
}

// WebhookEvent is an outbox event.
type WebhookEvent struct {
	ID         string          `db:"id"`
	UserID     string          `db:"user_id"`
	SessionID  string          `db:"session_id"`
	Sequence   int64           `db:"sequence"`
	Type       string          `db:"type"`
	OccurredAt time.Time       `db:"occurred_at"`
	Snapshot   json.RawMessage `db:"snapshot"`
	Body       *string         `db:"body"`
}

// ClaimedWebhook is an attempt a worker may make now.
type ClaimedWebhook struct {
	Endpoint WebhookEndpoint
	Event    WebhookEvent
	// Attempt is this attempt's number (1 for the first); the outcome
	// must name it.
	Attempt int
}

// ClaimWebhook takes the attempt after `attempts` of the delivery of
// eventID to endpointID, for lease: the delivery must be pending, due, the
// head of its session's deliveries to that endpoint, not in flight, and
// its endpoint on, with fewer than perEndpoint attempts in flight
// (ErrWebhookBusy); otherwise ErrWebhookNotDue. Claims of one endpoint are
// serialised on its row, so the in-flight cap holds across workers; the
// lock is FOR NO KEY UPDATE, which the triggers' inserts of new deliveries
// (a key-share lock through the foreign key) do not wait for.
func (s *Store) ClaimWebhook(ctx context.Context, endpointID, eventID string, attempts int, lease time.Duration, perEndpoint int) (ClaimedWebhook, error) {
	var c ClaimedWebhook
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+webhookEndpointColumns+` FROM webhook_endpoints
			WHERE id = $1 AND enabled FOR NO KEY UPDATE`, endpointID)
		if err != nil {
			return err
		}
		if c.Endpoint, err = collectEndpoint(rows); err != nil {
			if errors.Is(err, ErrWebhookNotFound) {
				return ErrWebhookNotDue
			}
			return err
		}
		var inflight int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM webhook_deliveries
			WHERE endpoint_id = $1 AND status = 'pending' AND lease_until > now()`, endpointID).Scan(&inflight); err != nil {
			return err
		}
		if inflight >= perEndpoint {
			return ErrWebhookBusy
		}
		err = tx.QueryRow(ctx, `UPDATE webhook_deliveries d SET attempts = attempts + 1,
				lease_until = now() + $4::interval
			WHERE d.endpoint_id = $1 AND d.event_id = $2 AND d.status = 'pending' AND d.attempts = $3
			  AND d.next_attempt_at <= now() AND (d.lease_until IS NULL OR d.lease_until <= now())
			  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p
			      WHERE p.endpoint_id = d.endpoint_id AND p.session_id = d.session_id
			        AND p.status = 'pending' AND p.sequence < d.sequence)
			RETURNING d.attempts`, endpointID, eventID, attempts, lease).Scan(&c.Attempt)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrWebhookNotDue
		}
		if err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT id::text AS id, user_id::text AS user_id, session_id, sequence, type,
				occurred_at, snapshot, body FROM webhook_events WHERE id = $1`, eventID)
		if err != nil {
			return err
		}
		c.Event, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[WebhookEvent])
		return err
	})
	switch {
	case err == nil, errors.Is(err, ErrWebhookNotDue), errors.Is(err, ErrWebhookBusy):
		return c, err
	default:
		return c, fmt.Errorf("store: claim webhook: %w", err)
	}
}

// NextWebhookHead is the delivery after a delivered one: the pending
// delivery of the same endpoint and session with the lowest sequence, if
// it is due now (ok false otherwise). The deliverer claims it next, in the
// same task, so a session's backlog drains without a dispatch per event.
func (s *Store) NextWebhookHead(ctx context.Context, endpointID, sessionID string) (d DueWebhook, ok bool, err error) {
	err = s.pool.QueryRow(ctx, `SELECT endpoint_id::text, event_id::text, attempts FROM webhook_deliveries
		WHERE endpoint_id = $1 AND session_id = $2 AND status = 'pending'
		ORDER BY sequence LIMIT 1`, endpointID, sessionID).Scan(&d.EndpointID, &d.EventID, &d.Attempts)
	if errors.Is(err, pgx.ErrNoRows) {
		return d, false, nil
	}
	if err != nil {
		return d, false, fmt.Errorf("store: next webhook: %w", err)
	}
	return d, true, nil
}

// SetWebhookBody stores an event's rendered body unless one is stored
// already, and returns the stored one: the first rendering is the one
// every attempt sends.
func (s *Store) SetWebhookBody(ctx context.Context, eventID, body string) (string, error) {
	var out string
	if err := s.pool.QueryRow(ctx, `UPDATE webhook_events SET body = COALESCE(body, $2) WHERE id = $1 RETURNING body`,
		eventID, body).Scan(&out); err != nil {
		return "", fmt.Errorf("store: set webhook body: %w", err)
	}
	return out, nil
}

// WebhookResult is what an attempt's outcome does to its delivery.
type WebhookResult int

// Attempt outcomes.
const (
	// WebhookDelivered: the receiver answered 2xx.
	WebhookDelivered WebhookResult = iota
	// WebhookRetry: it failed; try again at RetryIn.
	WebhookRetry
	// WebhookGiveUp: it failed and was the last attempt; the event stays
	// visible and replayable, and no longer holds back later events.
	WebhookGiveUp
	// WebhookGone: the receiver answered 410; the endpoint is turned off at
	// once and the delivery waits (pending) for it to be turned on again.
	WebhookGone
)

// WebhookOutcome is the result of one attempt.
type WebhookOutcome struct {
	EndpointID string
	EventID    string
	Attempt    int
	Result     WebhookResult
	HTTPStatus int // 0: no response
	Latency    time.Duration
	// Error is a short, secret-free description of a failure.
	Error   string
	RetryIn time.Duration
	// DisableAfter turns the endpoint off when every attempt has failed
	// for this long.
	DisableAfter time.Duration
}

// RecordWebhookOutcome logs an attempt and moves its delivery on. An
// outcome for an attempt that is no longer the delivery's latest (a
// replay reset it, or the lease ran out and another worker tried) only
// logs. It returns why the endpoint was turned off by this outcome, or "".
func (s *Store) RecordWebhookOutcome(ctx context.Context, o WebhookOutcome) (disabled string, err error) {
	var status *int
	if o.HTTPStatus != 0 {
		status = &o.HTTPStatus
	}
	var errText *string
	if o.Error != "" {
		errText = &o.Error
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO webhook_attempts (endpoint_id, event_id, attempt, http_status, latency_ms, error)
			VALUES ($1, $2, $3, $4, $5, $6)`, o.EndpointID, o.EventID, o.Attempt, status,
			o.Latency.Milliseconds(), errText); err != nil {
			return err
		}
		result := "retry"
		switch o.Result {
		case WebhookDelivered:
			result = "delivered"
		case WebhookGiveUp:
			result = "failed"
		}
		tag, err := tx.Exec(ctx, `UPDATE webhook_deliveries SET
				status = CASE $7 WHEN 'retry' THEN status ELSE $7 END,
				delivered_at = CASE $7 WHEN 'delivered' THEN now() ELSE delivered_at END,
				next_attempt_at = CASE $7 WHEN 'retry' THEN now() + $6::interval ELSE next_attempt_at END,
				last_error = $5::text, lease_until = NULL, last_status = $4::int
			WHERE endpoint_id = $1 AND event_id = $2 AND attempts = $3 AND status = 'pending'`,
			o.EndpointID, o.EventID, o.Attempt, status, errText, o.RetryIn, result)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return nil // a stale attempt: logged only
		}
		switch o.Result {
		case WebhookDelivered:
			_, err = tx.Exec(ctx, `UPDATE webhook_endpoints SET failing_since = NULL
				WHERE id = $1 AND failing_since IS NOT NULL`, o.EndpointID)
		case WebhookGone:
			disabled = WebhookDisabledGone
			_, err = tx.Exec(ctx, `UPDATE webhook_endpoints SET enabled = false, disabled_reason = 'gone', updated_at = now()
				WHERE id = $1 AND enabled`, o.EndpointID)
		default:
			var off bool
			err = tx.QueryRow(ctx, `UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, now()),
					enabled = enabled AND NOT COALESCE(failing_since < now() - $2::interval, false),
					disabled_reason = CASE WHEN failing_since < now() - $2::interval THEN 'failing' ELSE disabled_reason END
				WHERE id = $1 RETURNING (NOT enabled AND disabled_reason IS NOT DISTINCT FROM 'failing')`, o.EndpointID, o.DisableAfter).Scan(&off)
			if off {
				disabled = WebhookDisabledFailing
			}
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("store: record webhook outcome: %w", err)
	}
	return disabled, nil
}

// WebhookBacklog is an enabled endpoint's undelivered events.
type WebhookBacklog struct {
	EndpointID string  `db:"endpoint_id"`
	Pending    int64   `db:"pending"`
	OldestAge  float64 `db:"oldest_age"` // seconds since the oldest pending event
}

// WebhookBacklogs lists every endpoint with pending deliveries.
func (s *Store) WebhookBacklogs(ctx context.Context) ([]WebhookBacklog, error) {
	rows, err := s.pool.Query(ctx, `SELECT d.endpoint_id::text AS endpoint_id, count(*) AS pending,
			EXTRACT(EPOCH FROM now() - min(d.created_at))::float8 AS oldest_age
		FROM webhook_deliveries d WHERE d.status = 'pending' GROUP BY d.endpoint_id`)
	if err != nil {
		return nil, fmt.Errorf("store: webhook backlogs: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[WebhookBacklog])
	if err != nil {
		return nil, fmt.Errorf("store: webhook backlogs: %w", err)
	}
	return out, nil
}

// DeleteOldWebhookEvents removes, at most batch at a time, events older
// than retention that no endpoint still waits for, and attempts older than
// retention.
func (s *Store) DeleteOldWebhookEvents(ctx context.Context, retention time.Duration, batch int) (int, error) {
	total := 0
	for {
		tag, err := s.pool.Exec(ctx, `DELETE FROM webhook_events WHERE id IN (
				SELECT ev.id FROM webhook_events ev
				WHERE ev.occurred_at < now() - $1::interval
				  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = ev.id AND d.status = 'pending')
				LIMIT $2)`, retention, batch)
		if err != nil {
			return total, fmt.Errorf("store: delete old webhook events: %w", err)
		}
		total += int(tag.RowsAffected())
		if tag.RowsAffected() < int64(batch) {
			break
		}
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM webhook_attempts WHERE at < now() - $1::interval`, retention); err != nil {
		return total, fmt.Errorf("store: delete old webhook attempts: %w", err)
	}
	return total, nil
}
