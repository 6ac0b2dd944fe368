package store

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// The operators' queries (GET /api/integrations/admin/...): every user's
// sessions, never scoped to a caller. Each list shape has an index of its
// own (migrations/00002_admin.sql), so a page costs the same however many
// sessions the table holds.

// MaxAdminPage bounds one page of the admin list.
const MaxAdminPage = 200

// Cursor is the keyset position after the last row of a page: sessions are
// listed newest first by (created_at, id), which never changes for a row,
// so paging is stable while sessions change status under it.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// ErrBadCursor is a cursor that this code did not produce.
var ErrBadCursor = errors.New("store: malformed cursor")

// String encodes the cursor for a URL: opaque to clients.
func (c Cursor) String() string {
	raw := strconv.FormatInt(c.CreatedAt.UnixMicro(), 10) + "_" + c.ID
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// ParseCursor decodes what Cursor.String produced.
func ParseCursor(s string) (Cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, ErrBadCursor
	}
	micros, id, ok := strings.Cut(string(raw), "_")
	if !ok {
		return Cursor{}, ErrBadCursor
	}
	us, err := strconv.ParseInt(micros, 10, 64)
	if err != nil {
		return Cursor{}, ErrBadCursor
	}
	if _, err := uuid.Parse(id); err != nil {
		return Cursor{}, ErrBadCursor
	}
	return Cursor{CreatedAt: time.UnixMicro(us).UTC(), ID: id}, nil
}

// AdminSession is a session as the operators' queries read it: the row
// plus the worker that hosted it last.
type AdminSession struct {
	Session
	// LastWorkerID is the last worker that held the session's lease, kept
	// after the lease ends (migrations/00018_admin_last_worker.sql); nil
	// if no worker ever hosted it.
	LastWorkerID *string `db:"last_worker_id"`
}

// adminColumns selects an AdminSession.
const adminColumns = sessionColumns + `, last_worker_id`

// AdminFilter selects sessions for the admin list; zero fields match all.
type AdminFilter struct {
	Status Status
	// WorkerID matches the sessions that worker hosts now or hosted last
	// (last_worker_id): an ended session keeps its last worker.
	WorkerID string
	UserID   string
	After    *Cursor
	// Limit is the page size, 1..MaxAdminPage.
	Limit int
}

// AdminList returns one page of every user's sessions, newest first, and
// the cursor of the next page (nil on the last one). Only the conditions
// asked for are in the SQL, so the planner picks the index made for that
// shape (status, worker or user) instead of a generic plan.
func (s *Store) AdminList(ctx context.Context, f AdminFilter) ([]AdminSession, *Cursor, error) {
	if f.Limit < 1 || f.Limit > MaxAdminPage {
		return nil, nil, fmt.Errorf("store: admin list: limit %d out of 1..%d", f.Limit, MaxAdminPage)
	}
	q, args := adminListQuery(f)
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("store: admin list: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[AdminSession])
	if err != nil {
		return nil, nil, fmt.Errorf("store: admin list: %w", err)
	}
	if len(list) <= f.Limit {
		return list, nil, nil
	}
	list = list[:f.Limit]
	last := list[len(list)-1]
	return list, &Cursor{CreatedAt: last.CreatedAt, ID: last.ID}, nil
}

// adminListQuery builds AdminList's statement with only the conditions f
// asks for, fetching one row more than the page.
func adminListQuery(f AdminFilter) (string, []any) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Status != "" {
		where = append(where, "status = "+arg(string(f.Status)))
	}
	if f.WorkerID != "" {
		where = append(where, "last_worker_id = "+arg(f.WorkerID))
	}
	if f.UserID != "" {
		where = append(where, "user_id = "+arg(f.UserID)+"::uuid")
	}
	if f.After != nil {
		where = append(where, "(created_at, id) < ("+arg(f.After.CreatedAt)+"::timestamptz, "+arg(f.After.ID)+"::uuid)")
	}
	q := `SELECT ` + adminColumns + ` FROM whatsapp_sessions`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	// One row more than the page tells whether another page follows.
	q += ` ORDER BY created_at DESC, id DESC LIMIT ` + arg(f.Limit+1)
	return q, args
}

// AdminGet reads one session by its session id, whoever its user
// (ErrNotFound when there is none).
func (s *Store) AdminGet(ctx context.Context, sessionID string) (AdminSession, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+adminColumns+` FROM whatsapp_sessions WHERE session_id = $1`, sessionID)
	if err != nil {
		return AdminSession{}, fmt.Errorf("store: admin get: %w", err)
	}
	sess, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[AdminSession])
	if errors.Is(err, pgx.ErrNoRows) {
		return AdminSession{}, ErrNotFound
	}
	if err != nil {
		return AdminSession{}, fmt.Errorf("store: admin get: %w", err)
	}
	return sess, nil
}

// MaxAdminBatch bounds AdminSessions' ids.
const MaxAdminBatch = 500

// AdminSessions reads the sessions with these session ids (those that
// exist, in no particular order): what the admin event stream shows of the
// sessions it was told changed.
func (s *Store) AdminSessions(ctx context.Context, sessionIDs []string) ([]AdminSession, error) {
	if len(sessionIDs) > MaxAdminBatch {
		return nil, fmt.Errorf("store: admin sessions: %d ids, at most %d", len(sessionIDs), MaxAdminBatch)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+adminColumns+` FROM whatsapp_sessions WHERE session_id = ANY($1)`, sessionIDs)
	if err != nil {
		return nil, fmt.Errorf("store: admin sessions: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[AdminSession])
	if err != nil {
		return nil, fmt.Errorf("store: admin sessions: %w", err)
	}
	return out, nil
}

// StatusChange is one row of a session's status history.
type StatusChange struct {
	Status       Status     `db:"status"`
	StatusReason *Reason    `db:"status_reason"`
	WorkerID     *string    `db:"worker_id"`
	LastError    *ErrorCode `db:"last_error"`
	ChangedAt    time.Time  `db:"changed_at"`
}

// StatusHistory is a session's latest status changes, newest first, as the
// trigger of migrations/00002_admin.sql recorded them.
func (s *Store) StatusHistory(ctx context.Context, sessionID string, limit int) ([]StatusChange, error) {
	rows, err := s.pool.Query(ctx, `SELECT h.status, h.status_reason, h.worker_id, h.last_error, h.changed_at
		FROM session_status_history h JOIN whatsapp_sessions s ON s.id = h.session_pk
		WHERE s.session_id = $1
		ORDER BY h.id DESC LIMIT $2`, sessionID, limit)
	if err != nil {
		return nil, fmt.Errorf("store: status history: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[StatusChange])
	if err != nil {
		return nil, fmt.Errorf("store: status history: %w", err)
	}
	return out, nil
}

// PruneStatusHistory deletes up to batch history rows older than maxAge
// and returns how many it deleted; the caller loops while a whole batch
// went, so no single statement holds many locks.
func (s *Store) PruneStatusHistory(ctx context.Context, maxAge time.Duration, batch int) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM session_status_history WHERE id IN (
			SELECT id FROM session_status_history WHERE changed_at < now() - $1::interval
			ORDER BY changed_at LIMIT $2)`, maxAge, batch)
	if err != nil {
		return 0, fmt.Errorf("store: prune status history: %w", err)
	}
	return tag.RowsAffected(), nil
}

// RequestDisconnectSession is RequestDisconnect for one session, whoever
// its user: it records that the session is wanted gone and returns it if
// this call changed it (changed false: it was already gone or ended).
func (s *Store) RequestDisconnectSession(ctx context.Context, sessionID string) (sess Session, changed bool, err error) {
	rows, err := s.pool.Query(ctx, `UPDATE whatsapp_sessions
		SET desired_state = 'gone', updated_at = now()
		WHERE session_id = $1 AND desired_state = 'linked'
		  AND (status IN `+liveStatuses+` OR device_jid IS NOT NULL)
		RETURNING `+sessionColumns, sessionID)
	if err != nil {
		return Session{}, false, fmt.Errorf("store: request disconnect of session: %w", err)
	}
	sess, err = collectOne(rows)
	if errors.Is(err, ErrNotFound) {
		return Session{}, false, nil
	}
	if err != nil {
		return Session{}, false, fmt.Errorf("store: request disconnect of session: %w", err)
	}
	return sess, true, nil
}
