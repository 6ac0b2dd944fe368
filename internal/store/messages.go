package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Messages: the outbox and inbox of linked sessions (migrations/00002).
// Outbound rows are committed in status queued before anything is
// enqueued; the worker holding the session's lease takes them one at a
// time, in seq order, paced by a token bucket kept in message_sessions.

// Message errors callers branch on.
var (
	// ErrNotLinked: the user has no linked session to send through.
	ErrNotLinked = errors.New("store: no linked session")
	// ErrMessageNotFound: no such message (or not the caller's).
	ErrMessageNotFound = errors.New("store: message not found")
	// ErrIdempotencyMismatch: the Idempotency-Key was used within 24 h for a
	// different message.
	ErrIdempotencyMismatch = errors.New("store: idempotency key reused for a different message")
	// ErrOutboxEmpty: the session has nothing queued to send.
	ErrOutboxEmpty = errors.New("store: outbox empty")
)

// IdempotencyWindow is how long an Idempotency-Key stands for its message.
const IdempotencyWindow = 24 * time.Hour

// Message is one row of messages.
type Message struct {
	ID             string     `db:"id"`
	Seq            int64      `db:"seq"`
	UserID         string     `db:"user_id"`
	SessionID      string     `db:"session_id"`
	Direction      string     `db:"direction"`
	Chat           string     `db:"chat"`
	Text           string     `db:"text"`
	WAMessageID    string     `db:"wa_message_id"`
	Status         string     `db:"status"`
	StatusReason   *string    `db:"status_reason"`
	IdempotencyKey *string    `db:"idempotency_key"`
	Attempts       int        `db:"attempts"`
	CreatedAt      time.Time  `db:"created_at"`
	UpdatedAt      time.Time  `db:"updated_at"`
	SentAt         *time.Time `db:"sent_at"`
	DeliveredAt    *time.Time `db:"delivered_at"`
	ReadAt         *time.Time `db:"read_at"`
	WATimestamp    *time.Time `db:"wa_timestamp"`
}

const messageColumns = `id, seq, user_id, session_id, direction, chat, text, wa_message_id, status, status_reason,
	idempotency_key, attempts, created_at, updated_at, sent_at, delivered_at, read_at, wa_timestamp`

// MessageStatusChange is one entry of a message's status history.
type MessageStatusChange struct {
	Status       string    `db:"status"`
	StatusReason *string   `db:"status_reason"`
	At           time.Time `db:"at"`
}

func collectMessages(rows pgx.Rows) ([]Message, error) {
	return pgx.CollectRows(rows, pgx.RowToStructByName[Message])
}

func collectMessage(rows pgx.Rows) (Message, error) {
	m, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Message])
	if errors.Is(err, pgx.ErrNoRows) {
		return Message{}, ErrMessageNotFound
	}
	return m, err
}

// NewWAMessageID returns a fresh WhatsApp message id in the web client's
// format ("3EB0" and 18 upper-case hex digits). It is chosen when the
// message is accepted, before any send, so every retry reuses it.
func NewWAMessageID() string {
	var b [9]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("store: crypto/rand failed: " + err.Error()) // never happens on supported platforms
	}
	return "3EB0" + strings.ToUpper(hex.EncodeToString(b[:]))
}

// NewOutbound is a send the API accepted.
type NewOutbound struct {
	UserID string
	To     string // E.164
	Text   string
	// IdempotencyKey, when not empty, makes a repeat within 24 h return the
	// first message instead of queueing another.
	IdempotencyKey string
}

// QueueOutbound records a send through the user's linked session, in status
// queued. created is false when IdempotencyKey named a message accepted
// within the last 24 h: that message is returned and nothing new is queued
// (ErrIdempotencyMismatch if its recipient or text differ). ErrNotLinked:
// the user has no live session with a linked device.
func (s *Store) QueueOutbound(ctx context.Context, n NewOutbound) (m Message, created bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var sessionID string
		err := tx.QueryRow(ctx, `SELECT session_id FROM whatsapp_sessions
			WHERE user_id = $1 AND desired_state = 'linked' AND status IN `+liveStatuses+` AND device_jid IS NOT NULL
			ORDER BY created_at DESC LIMIT 1`, n.UserID).Scan(&sessionID)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotLinked
		}
		if err != nil {
			return err
		}
		if n.IdempotencyKey != "" {
			// A key older than the window is free again.
			if _, err := tx.Exec(ctx, `UPDATE messages SET idempotency_key = NULL
				WHERE user_id = $1 AND idempotency_key = $2 AND created_at < now() - $3::interval`,
				n.UserID, n.IdempotencyKey, IdempotencyWindow); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, `INSERT INTO messages (user_id, session_id, direction, chat, text, wa_message_id, status, idempotency_key)
			VALUES ($1, $2, 'out', $3, $4, $5, 'queued', NULLIF($6, ''))
			ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
			RETURNING `+messageColumns, n.UserID, sessionID, n.To, n.Text, NewWAMessageID(), n.IdempotencyKey)
		if err != nil {
			return err
		}
		m, err = collectMessage(rows)
		switch {
		case err == nil:
			created = true
			_, err = tx.Exec(ctx, `INSERT INTO message_sessions (session_id, user_id, tokens) VALUES ($1, $2, -1)
				ON CONFLICT (session_id) DO NOTHING`, sessionID, n.UserID)
			return err
		case !errors.Is(err, ErrMessageNotFound):
			return err
		}
		// The key is taken: by a committed row (a concurrent insert waited
		// for it to commit), which this statement now sees.
		rows, err = tx.Query(ctx, `SELECT `+messageColumns+` FROM messages WHERE user_id = $1 AND idempotency_key = $2`,
			n.UserID, n.IdempotencyKey)
		if err != nil {
			return err
		}
		if m, err = collectMessage(rows); err != nil {
			return err
		}
		if m.Chat != n.To || m.Text != n.Text {
			return ErrIdempotencyMismatch
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrNotLinked) && !errors.Is(err, ErrIdempotencyMismatch) {
		err = fmt.Errorf("store: queue message: %w", err)
	}
	return m, created, err
}

// GetMessage reads one of userID's messages; another user's is
// ErrMessageNotFound.
func (s *Store) GetMessage(ctx context.Context, userID, id string) (Message, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+messageColumns+` FROM messages WHERE id = $1 AND user_id = $2`, id, userID)
	if err != nil {
		return Message{}, fmt.Errorf("store: get message: %w", err)
	}
	return collectMessage(rows)
}

// MessageHistory is every status the message went through, oldest first.
func (s *Store) MessageHistory(ctx context.Context, id string) ([]MessageStatusChange, error) {
	rows, err := s.pool.Query(ctx, `SELECT status, status_reason, at FROM message_status_history
		WHERE message_id = $1 ORDER BY at, status`, id)
	if err != nil {
		return nil, fmt.Errorf("store: message history: %w", err)
	}
	h, err := pgx.CollectRows(rows, pgx.RowToStructByName[MessageStatusChange])
	if err != nil {
		return nil, fmt.Errorf("store: message history: %w", err)
	}
	return h, nil
}

// MessageStatusKey names one status a message reached.
type MessageStatusKey struct {
	MessageID string
	Status    string
}

// MessageStatusEvent is a status a message reached, with the message as it
// is now.
type MessageStatusEvent struct {
	Message
	Change MessageStatusChange
}

// MessageStatusEvents looks up, for the event stream, each named status of
// userID's messages in their status history, in the order of keys. A key
// that names another user's message, an unknown message or a status the
// message never had is left out: the keys come from Redis, where anyone
// able to publish could forge them.
func (s *Store) MessageStatusEvents(ctx context.Context, userID string, keys []MessageStatusKey) ([]MessageStatusEvent, error) {
	ids, statuses := make([]string, 0, len(keys)), make([]string, 0, len(keys))
	for _, k := range keys {
		if uuid.Validate(k.MessageID) == nil {
			ids, statuses = append(ids, k.MessageID), append(statuses, k.Status)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT ON (k.ord) `+prefixed("m.", messageColumns)+`,
			h.status AS change_status, h.status_reason AS change_reason, h.at AS change_at
		FROM unnest($2::uuid[], $3::text[]) WITH ORDINALITY AS k(id, status, ord)
		JOIN messages m ON m.id = k.id AND m.user_id = $1
		JOIN message_status_history h ON h.message_id = m.id AND h.status = k.status
		ORDER BY k.ord, h.at DESC`, userID, ids, statuses)
	if err != nil {
		return nil, fmt.Errorf("store: message status events: %w", err)
	}
	type row struct {
		Message
		ChangeStatus string    `db:"change_status"`
		ChangeReason *string   `db:"change_reason"`
		ChangeAt     time.Time `db:"change_at"`
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByName[row])
	if err != nil {
		return nil, fmt.Errorf("store: message status events: %w", err)
	}
	out := make([]MessageStatusEvent, len(got))
	for i, r := range got {
		out[i] = MessageStatusEvent{Message: r.Message,
			Change: MessageStatusChange{Status: r.ChangeStatus, StatusReason: r.ChangeReason, At: r.ChangeAt}}
	}
	return out, nil
}

// MessageFilter narrows ListMessages.
type MessageFilter struct {
	Direction string // "", "in" or "out"
	Chat      string // "" or E.164
	// BeforeSeq, when > 0, lists only messages older than that one (the
	// cursor of the previous page).
	BeforeSeq int64
	Limit     int
}

// ListMessages is userID's messages, newest first, at most f.Limit; more is
// true when older ones follow.
func (s *Store) ListMessages(ctx context.Context, userID string, f MessageFilter) (msgs []Message, more bool, err error) {
	rows, err := s.pool.Query(ctx, `SELECT `+messageColumns+` FROM messages
		WHERE user_id = $1 AND ($2 = '' OR direction = $2) AND ($3 = '' OR chat = $3) AND ($4 = 0 OR seq < $4)
		ORDER BY seq DESC LIMIT $5`, userID, f.Direction, f.Chat, f.BeforeSeq, f.Limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("store: list messages: %w", err)
	}
	msgs, err = collectMessages(rows)
	if err != nil {
		return nil, false, fmt.Errorf("store: list messages: %w", err)
	}
	if len(msgs) > f.Limit {
		return msgs[:f.Limit], true, nil
	}
	return msgs, false, nil
}

// Pacing is a session's send rate: a token bucket of Burst tokens refilled
// at PerMinute. PerMinute 0 turns pacing off.
type Pacing struct {
	PerMinute float64
	Burst     int
}

// NextOutbound hands the lease holder f the session's next message to send
// (the oldest queued one) and takes a pacing token for it, in one
// transaction. Queued messages older than ttl fail as expired first (they
// are returned in expired, for events). When the bucket is empty it returns
// how long until a token is due, with the head message not taken (so the
// caller can wake in time to expire it). ErrFenced: f no longer
// holds a live lease on a session that is wanted; ErrOutboxEmpty: nothing
// to send.
func (s *Store) NextOutbound(ctx context.Context, f Fence, p Pacing, ttl time.Duration) (next Message, wait time.Duration, expired []Message, err error) {
	var empty bool
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var userID string
		err := tx.QueryRow(ctx, `SELECT user_id FROM whatsapp_sessions
			WHERE session_id = $1 AND worker_id = $2 AND lease_epoch = $3 AND lease_until > now()
			  AND desired_state = 'linked'`, f.SessionID, f.WorkerID, f.Epoch).Scan(&userID)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrFenced
		}
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `UPDATE messages SET status = 'failed', status_reason = 'expired', updated_at = now()
			WHERE session_id = $1 AND status = 'queued' AND created_at < now() - $2::interval
			RETURNING `+messageColumns, f.SessionID, ttl)
		if err != nil {
			return err
		}
		if expired, err = collectMessages(rows); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT `+messageColumns+` FROM messages
			WHERE session_id = $1 AND status = 'queued' ORDER BY seq LIMIT 1`, f.SessionID)
		if err != nil {
			return err
		}
		if next, err = collectMessage(rows); err != nil {
			if errors.Is(err, ErrMessageNotFound) {
				empty = true
				return nil // commit: the expiries above stand
			}
			return err
		}
		if p.PerMinute > 0 {
			perSec := p.PerMinute / 60
			burst := float64(max(p.Burst, 1))
			if _, err := tx.Exec(ctx, `INSERT INTO message_sessions (session_id, user_id, tokens) VALUES ($1, $2, -1)
				ON CONFLICT (session_id) DO NOTHING`, f.SessionID, userID); err != nil {
				return err
			}
			// tokens < 0 means "never used": a full bucket.
			var avail float64
			if err := tx.QueryRow(ctx, `SELECT CASE WHEN tokens < 0 THEN $2
					ELSE LEAST($2, tokens + EXTRACT(EPOCH FROM clock_timestamp() - tokens_at)::float8 * $3) END
				FROM message_sessions WHERE session_id = $1 FOR UPDATE`, f.SessionID, burst, perSec).Scan(&avail); err != nil {
				return err
			}
			if avail < 1 {
				wait = time.Duration((1 - avail) / perSec * float64(time.Second))
				return nil
			}
			if _, err := tx.Exec(ctx, `UPDATE message_sessions SET tokens = $2, tokens_at = clock_timestamp() WHERE session_id = $1`,
				f.SessionID, avail-1); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `UPDATE messages SET attempts = attempts + 1, last_attempt_at = clock_timestamp(), updated_at = now()
			WHERE id = $1`, next.ID)
		next.Attempts++
		return err
	})
	switch {
	case err == nil && empty:
		err = ErrOutboxEmpty
	case err != nil && !errors.Is(err, ErrFenced):
		err = fmt.Errorf("store: next outbound: %w", err)
	}
	return next, wait, expired, err
}

// MarkSent records WhatsApp's server ack of an outbound message. A receipt
// that overtook the ack keeps its later status; sent_at is set either way.
// It reports the row and whether the status changed.
func (s *Store) MarkSent(ctx context.Context, id string) (Message, bool, error) {
	rows, err := s.pool.Query(ctx, `UPDATE messages m SET status = CASE WHEN m.status = 'queued' THEN 'sent' ELSE m.status END,
			status_reason = NULL, sent_at = COALESCE(m.sent_at, now()), updated_at = now()
		FROM (SELECT id, status FROM messages WHERE id = $1 FOR UPDATE) old
		WHERE m.id = old.id AND m.direction = 'out' AND m.status IN ('queued','delivered','read')
		RETURNING `+prefixed("m.", messageColumns)+`, old.status = 'queued' AS changed`, id)
	if err != nil {
		return Message{}, false, fmt.Errorf("store: mark sent: %w", err)
	}
	type row struct {
		Message
		Changed bool `db:"changed"`
	}
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[row])
	if errors.Is(err, pgx.ErrNoRows) {
		return Message{}, false, ErrMessageNotFound
	}
	if err != nil {
		return Message{}, false, fmt.Errorf("store: mark sent: %w", err)
	}
	return r.Message, r.Changed, nil
}

// FailOutbound ends a queued outbound message as failed with reason.
func (s *Store) FailOutbound(ctx context.Context, id, reason string) (Message, error) {
	rows, err := s.pool.Query(ctx, `UPDATE messages SET status = 'failed', status_reason = $2, updated_at = now()
		WHERE id = $1 AND direction = 'out' AND status = 'queued' RETURNING `+messageColumns, id, reason)
	if err != nil {
		return Message{}, fmt.Errorf("store: fail message: %w", err)
	}
	return collectMessage(rows)
}

// ApplyReceipt moves outbound messages of sessionID forward on a delivery
// (read false) or read receipt, never backward, and returns those it moved.
func (s *Store) ApplyReceipt(ctx context.Context, sessionID string, waIDs []string, read bool) ([]Message, error) {
	from := []string{MessageQueued, MessageSent}
	if read {
		from = append(from, MessageDelivered)
	}
	rows, err := s.pool.Query(ctx, `UPDATE messages SET
			status = CASE WHEN $3 THEN 'read' ELSE 'delivered' END,
			status_reason = NULL,
			sent_at = COALESCE(sent_at, now()),
			delivered_at = COALESCE(delivered_at, now()),
			read_at = CASE WHEN $3 THEN now() ELSE read_at END,
			updated_at = now()
		WHERE session_id = $1 AND wa_message_id = ANY($2) AND direction = 'out' AND status = ANY($4)
		RETURNING `+messageColumns, sessionID, waIDs, read, from)
	if err != nil {
		return nil, fmt.Errorf("store: apply receipt: %w", err)
	}
	ms, err := collectMessages(rows)
	if err != nil {
		return nil, fmt.Errorf("store: apply receipt: %w", err)
	}
	return ms, nil
}

// MarkAccepted records that WhatsApp holds the queued outbound messages of
// sessionID with these WhatsApp ids, learned from the account's own phone
// (its receipt for its copy, which only WhatsApp can have relayed) rather
// than from the ack to the send. It moves queued messages to sent and
// returns those it moved; any other status is left as it is.
func (s *Store) MarkAccepted(ctx context.Context, sessionID string, waIDs []string) ([]Message, error) {
	rows, err := s.pool.Query(ctx, `UPDATE messages SET status = 'sent', status_reason = NULL,
			sent_at = COALESCE(sent_at, now()), updated_at = now()
		WHERE session_id = $1 AND wa_message_id = ANY($2) AND direction = 'out' AND status = 'queued'
		RETURNING `+messageColumns, sessionID, waIDs)
	if err != nil {
		return nil, fmt.Errorf("store: mark accepted: %w", err)
	}
	ms, err := collectMessages(rows)
	if err != nil {
		return nil, fmt.Errorf("store: mark accepted: %w", err)
	}
	return ms, nil
}

// Inbound is a text WhatsApp delivered to a linked session.
type Inbound struct {
	SessionID   string
	UserID      string
	Chat        string
	Text        string
	WAMessageID string
	Timestamp   time.Time
}

// SaveInbound stores an inbound text once: a second delivery of the same
// WhatsApp message id to the same session is not stored again (created
// false). The caller acknowledges the message to WhatsApp only after this
// returned without error.
func (s *Store) SaveInbound(ctx context.Context, in Inbound) (Message, bool, error) {
	var (
		m       Message
		created bool
	)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `INSERT INTO messages (user_id, session_id, direction, chat, text, wa_message_id, status, wa_timestamp)
			VALUES ($1, $2, 'in', $3, $4, $5, 'received', $6)
			ON CONFLICT (session_id, wa_message_id) DO NOTHING
			RETURNING `+messageColumns, in.UserID, in.SessionID, in.Chat, in.Text, in.WAMessageID, in.Timestamp)
		if err != nil {
			return err
		}
		m, err = collectMessage(rows)
		if errors.Is(err, ErrMessageNotFound) {
			return nil // stored before
		}
		if err != nil {
			return err
		}
		created = true
		_, err = tx.Exec(ctx, `INSERT INTO message_sessions (session_id, user_id, tokens) VALUES ($1, $2, -1)
			ON CONFLICT (session_id) DO NOTHING`, in.SessionID, in.UserID)
		return err
	})
	if err != nil {
		return Message{}, false, fmt.Errorf("store: save inbound: %w", err)
	}
	return m, created, nil
}

// OutboxSession is a session with queued messages: where to wake its
// sender.
type OutboxSession struct {
	SessionID string  `db:"session_id"`
	WorkerID  *string `db:"worker_id"`
	LeaseLive bool    `db:"lease_live"`
	Oldest    string  `db:"oldest"`
}

// SessionsWithQueued lists live sessions that have queued messages, with
// their oldest queued message (its id names the wake-up task) and their
// host, at most limit.
func (s *Store) SessionsWithQueued(ctx context.Context, limit int) ([]OutboxSession, error) {
	rows, err := s.pool.Query(ctx, `SELECT q.session_id, w.worker_id,
			COALESCE(w.lease_until > now(), false) AS lease_live, q.oldest::text AS oldest
		FROM (SELECT DISTINCT ON (session_id) session_id, id AS oldest FROM messages
		      WHERE status = 'queued' ORDER BY session_id, seq) q
		JOIN whatsapp_sessions w ON w.session_id = q.session_id
		WHERE w.desired_state = 'linked' AND w.status IN `+liveStatuses+`
		LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("store: sessions with queued messages: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[OutboxSession])
	if err != nil {
		return nil, fmt.Errorf("store: sessions with queued messages: %w", err)
	}
	return out, nil
}

// FailStranded ends queued messages that can no longer go out, at most
// limit: those of a session that ended or that the user wants gone
// (session_ended), and those older than ttl in a session no worker hosts
// right now (expired; a hosting worker's sender expires its own, see
// NextOutbound, so a send in flight is never marked expired under it).
func (s *Store) FailStranded(ctx context.Context, ttl time.Duration, limit int) ([]Message, error) {
	rows, err := s.pool.Query(ctx, `WITH stranded AS (
			SELECT m.id, CASE WHEN w.session_id IS NULL OR w.desired_state <> 'linked'
			                       OR w.status NOT IN `+liveStatuses+` THEN 'session_ended'
			                  ELSE 'expired' END AS reason
			FROM messages m LEFT JOIN whatsapp_sessions w ON w.session_id = m.session_id
			WHERE m.status = 'queued' AND (
			      w.session_id IS NULL OR w.desired_state <> 'linked' OR w.status NOT IN `+liveStatuses+`
			   OR (m.created_at < now() - $1::interval AND NOT COALESCE(w.lease_until > now(), false)))
			ORDER BY m.seq LIMIT $2
			FOR UPDATE OF m SKIP LOCKED)
		UPDATE messages m SET status = 'failed', status_reason = stranded.reason, updated_at = now()
		FROM stranded WHERE m.id = stranded.id AND m.status = 'queued'
		RETURNING `+prefixed("m.", messageColumns), ttl, limit)
	if err != nil {
		return nil, fmt.Errorf("store: fail stranded messages: %w", err)
	}
	ms, err := collectMessages(rows)
	if err != nil {
		return nil, fmt.Errorf("store: fail stranded messages: %w", err)
	}
	return ms, nil
}

// DeleteOldMessages removes, at most batch at a time, the messages of
// sessions that ended more than retention ago. It first notes when each
// session with messages ended (it is no longer live, or its row is gone),
// which is what retention counts from.
func (s *Store) DeleteOldMessages(ctx context.Context, retention time.Duration, batch int) (int, error) {
	if _, err := s.pool.Exec(ctx, `UPDATE message_sessions ms SET ended_at = now()
		WHERE ended_at IS NULL AND NOT EXISTS (
			SELECT 1 FROM whatsapp_sessions w WHERE w.session_id = ms.session_id
			  AND w.desired_state = 'linked' AND w.status IN `+liveStatuses+`)`); err != nil {
		return 0, fmt.Errorf("store: note ended message sessions: %w", err)
	}
	total := 0
	for {
		tag, err := s.pool.Exec(ctx, `DELETE FROM messages WHERE id IN (
			SELECT m.id FROM messages m JOIN message_sessions ms ON ms.session_id = m.session_id
			WHERE ms.ended_at < now() - $1::interval LIMIT $2)`, retention, batch)
		if err != nil {
			return total, fmt.Errorf("store: delete old messages: %w", err)
		}
		total += int(tag.RowsAffected())
		if tag.RowsAffected() < int64(batch) {
			break
		}
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM message_sessions ms WHERE ended_at < now() - $1::interval
		AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.session_id = ms.session_id)`, retention); err != nil {
		return total, fmt.Errorf("store: delete old message sessions: %w", err)
	}
	return total, nil
}

// prefixed qualifies each column of a column list with p.
func prefixed(p, cols string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = p + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}
