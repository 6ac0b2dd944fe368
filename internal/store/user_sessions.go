package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// NewSession is what the API knows when a user asks to link WhatsApp.
type NewSession struct {
	UserID    string
	SessionID string
	TTL       time.Duration
	// PairPhone, when set, asks for phone-number pairing instead of a QR.
	PairPhone string
}

// CreateSession inserts a pending session for the user, or returns the
// user's live session if there is one (created is then false). The partial
// unique index uq_whatsapp_sessions_live_user makes this safe under any
// number of concurrent calls: exactly one insert wins, the others see it.
//
// A live session past its expiry that no worker hosts is ended as expired
// first, as the next sweep would: no worker can claim it any more, so
// returning it would leave the user with a session that never shows a QR.
func (s *Store) CreateSession(ctx context.Context, n NewSession) (sess Session, created bool, err error) {
	if _, err := s.pool.Exec(ctx, `INSERT INTO users (id) VALUES ($1) ON CONFLICT (id) DO NOTHING`, n.UserID); err != nil {
		return Session{}, false, fmt.Errorf("store: upsert user: %w", err)
	}
	if _, err := s.pool.Exec(ctx, `UPDATE whatsapp_sessions SET `+expireSet+`
		WHERE user_id = $1 AND desired_state = 'linked' AND status IN `+liveStatuses+`
		  AND expires_at <= now() AND `+leaseFree, n.UserID); err != nil {
		return Session{}, false, fmt.Errorf("store: expire stale session: %w", err)
	}
	var pairPhone *string
	if n.PairPhone != "" {
		pairPhone = &n.PairPhone
	}
	// A live session can end between the conflicting insert and the read;
	// then the insert is retried, which can only happen a few times.
	for attempt := 0; attempt < 5; attempt++ {
		rows, err := s.pool.Query(ctx, `
			INSERT INTO whatsapp_sessions (user_id, session_id, status, desired_state, expires_at, pair_phone)
			VALUES ($1, $2, 'pending', 'linked', now() + $3::interval, $4)
			ON CONFLICT (user_id) WHERE desired_state = 'linked' AND status IN `+liveStatuses+` DO NOTHING
			RETURNING `+sessionColumns,
			n.UserID, n.SessionID, n.TTL, pairPhone)
		if err == nil {
			sess, err = collectOne(rows)
		}
		if err == nil {
			return sess, true, nil
		}
		// ON CONFLICT covers only the one-live-session-per-user index. Two
		// calls in the same millisecond carry the same session id, and the
		// loser then violates the session_id key instead: the winner's
		// insert has committed by then, so it is the live session read below.
		insertErr := err
		sameID := isUniqueViolation(err, "whatsapp_sessions_session_id_key")
		if !errors.Is(err, ErrNotFound) && !sameID {
			return Session{}, false, fmt.Errorf("store: insert session: %w", err)
		}
		sess, err = s.LiveSession(ctx, n.UserID)
		if err == nil {
			return sess, false, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return Session{}, false, err
		}
		if sameID {
			// Not a concurrent twin: the id belongs to an earlier session.
			// The unique violation stays in the chain: the caller retries
			// with a new id.
			return Session{}, false, fmt.Errorf("store: insert session: session id %s is already taken: %w", n.SessionID, insertErr)
		}
	}
	return Session{}, false, fmt.Errorf("store: create session for user: live session kept changing")
}

// LiveSession is the user's live session (at most one exists).
func (s *Store) LiveSession(ctx context.Context, userID string) (Session, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+sessionColumns+` FROM whatsapp_sessions
		WHERE user_id = $1 AND desired_state = 'linked' AND status IN `+liveStatuses, userID)
	if err != nil {
		return Session{}, fmt.Errorf("store: live session: %w", err)
	}
	return collectOne(rows)
}

// currentOfUser picks the user's current session ($1): the live one if
// any, else the most recent one. idx_whatsapp_sessions_current (migration
// 00022) holds a user's rows in this order, so Postgres reads one index
// entry and no sort: change the ORDER BY and the index together.
const currentOfUser = `WHERE user_id = $1
	ORDER BY (desired_state = 'linked' AND status IN ` + liveStatuses + `) DESC, created_at DESC, id
	LIMIT 1`

const currentSessionQuery = `SELECT ` + sessionColumns + ` FROM whatsapp_sessions ` + currentOfUser

// CurrentSession is the session the user's status and QR refer to: the live
// one if any, else the most recent one, whatever its status.
func (s *Store) CurrentSession(ctx context.Context, userID string) (Session, error) {
	rows, err := s.pool.Query(ctx, currentSessionQuery, userID)
	if err != nil {
		return Session{}, fmt.Errorf("store: current session: %w", err)
	}
	return collectOne(rows)
}

// Get reads one session by its session id.
func (s *Store) Get(ctx context.Context, sessionID string) (Session, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+sessionColumns+` FROM whatsapp_sessions WHERE session_id = $1`, sessionID)
	if err != nil {
		return Session{}, fmt.Errorf("store: get session: %w", err)
	}
	return collectOne(rows)
}

// GetForUser reads a session only if it belongs to userID; another user's
// session is ErrNotFound, exactly like a missing one.
func (s *Store) GetForUser(ctx context.Context, userID, sessionID string) (Session, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+sessionColumns+` FROM whatsapp_sessions
		WHERE session_id = $1 AND user_id = $2`, sessionID, userID)
	if err != nil {
		return Session{}, fmt.Errorf("store: get session: %w", err)
	}
	return collectOne(rows)
}

// RequestDisconnect records that the user wants their linked sessions gone
// and returns those that need a worker to carry it out (normally one): a
// live session, or one whose device keys remain. Carrying it out (logout,
// key deletion) is the worker's job; the row is durable first, so a lost
// task is found again by the reconciler. A session that already ended
// without a device (a failed pairing) is marked gone too, so the row says
// what the user asked for, but is not returned: nothing is left to do.
func (s *Store) RequestDisconnect(ctx context.Context, userID string) ([]Session, error) {
	rows, err := s.pool.Query(ctx, `WITH gone AS (
			UPDATE whatsapp_sessions
			SET desired_state = 'gone', updated_at = now()
			WHERE user_id = $1 AND desired_state = 'linked'
			RETURNING `+sessionColumns+`
		)
		SELECT * FROM gone WHERE status IN `+liveStatuses+` OR device_jid IS NOT NULL`, userID)
	if err != nil {
		return nil, fmt.Errorf("store: request disconnect: %w", err)
	}
	return collectAll(rows)
}

// Stats are the counts GET /sessions/stats reports.
type Stats struct {
	Total   int64 `json:"total"`
	Active  int64 `json:"active"`
	Expired int64 `json:"expired"`
}

// Stats counts sessions of one user, or of everyone when userID is "".
// Active means connected and authenticated; expired means past expires_at
// or ended by expiry.
func (s *Store) Stats(ctx context.Context, userID string) (Stats, error) {
	var st Stats
	err := s.pool.QueryRow(ctx, `SELECT
			count(*),
			count(*) FILTER (WHERE is_connected AND is_authenticated),
			count(*) FILTER (WHERE status = 'expired' OR expires_at < now())
		FROM whatsapp_sessions
		WHERE $1::uuid IS NULL OR user_id = $1::uuid`, nullIfEmpty(userID)).Scan(&st.Total, &st.Active, &st.Expired)
	if err != nil {
		return Stats{}, fmt.Errorf("store: stats: %w", err)
	}
	return st, nil
}

// CountByStatus is the number of sessions per status, for metrics.
func (s *Store) CountByStatus(ctx context.Context) (map[Status]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT status, count(*) FROM whatsapp_sessions GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("store: count by status: %w", err)
	}
	out := map[Status]int64{}
	var st Status
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&st, &n}, func() error { out[st] = n; return nil })
	if err != nil {
		return nil, fmt.Errorf("store: count by status: %w", err)
	}
	return out, nil
}

// CountLinked is the number of sessions that should be hosted right now
// (what the scheduler reports as "Loaded N existing sessions").
func (s *Store) CountLinked(ctx context.Context) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM whatsapp_sessions
		WHERE desired_state = 'linked' AND status IN `+liveStatuses).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: count linked: %w", err)
	}
	return n, nil
}

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// isUniqueViolation reports whether err is a unique violation of the named
// constraint or index.
func isUniqueViolation(err error, constraint string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == constraint
}

// SessionStatus is what a user's status shows of a session: no QR image
// (a PNG data URL of several KiB), no lease, device or proxy.
type SessionStatus struct {
	SessionID       string
	Status          Status
	StatusReason    *Reason
	DesiredState    DesiredState
	IsConnected     bool
	IsAuthenticated bool
	PhoneNumber     *string
	UserName        *string
	PairingCode     *string
	LastSeen        *time.Time
	ExpiresAt       *time.Time
	CreatedAt       time.Time
	UpdatedAt       time.Time
	LastError       *ErrorCode
	BannedUntil     *time.Time
}

// StatusOf is the part of s that SessionStatus holds.
func (s Session) StatusOf() SessionStatus {
	return SessionStatus{
		SessionID: s.SessionID, Status: s.Status, StatusReason: s.StatusReason, DesiredState: s.DesiredState,
		IsConnected: s.IsConnected, IsAuthenticated: s.IsAuthenticated, PhoneNumber: s.PhoneNumber,
		UserName: s.UserName, PairingCode: s.PairingCode, LastSeen: s.LastSeen, ExpiresAt: s.ExpiresAt,
		CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt, LastError: s.LastError, BannedUntil: s.BannedUntil,
	}
}

// statusColumns are the columns a status shows (SessionStatus), in the
// order statusRow decodes them.
const statusColumns = `session_id, status, status_reason, desired_state, is_connected,
	is_authenticated, phone_number, user_name, pairing_code, last_seen, expires_at, created_at,
	updated_at, last_error, banned_until`

// currentStatusQuery is CurrentSession's query for SessionStatus's columns
// only, scanned without reflection: GET /status is the route clients poll.
const currentStatusQuery = `SELECT ` + statusColumns + ` FROM whatsapp_sessions ` + currentOfUser

// liveStatusQuery is the user's live session alone, the first row of
// currentOfUser's order whenever there is one, read through the partial
// unique index uq_whatsapp_sessions_live_user (at most one row, no order).
const liveStatusQuery = `SELECT ` + statusColumns + ` FROM whatsapp_sessions
	WHERE user_id = $1 AND desired_state = 'linked' AND status IN ` + liveStatuses

// CurrentStatus is CurrentSession's status: the same row, only the
// columns a status shows. GET /status, which clients poll, is a call of
// this and little else, so the row is decoded from the values on the wire
// (statusRow) rather than through pgx's Scan, which plans a scan for every
// column of every row it reads: that planning and the scan targets were
// the larger part of the route's own CPU after the query (pprof under wrk).
//
// The live session is read first (liveStatusQuery), and only a user
// without one is read again in currentOfUser's order. Clients poll while
// a session is live (a QR being scanned, a linked device), and that read
// costs Postgres about a tenth less CPU than the ordered one through
// idx_whatsapp_sessions_current (docs/BENCHMARKS.md, API); a user whose
// sessions have all ended pays a second query. A session that becomes
// live between the two reads is what the second one returns: the current
// session at that moment, as currentOfUser would have read it.
//
// ctx's deadline bounds the queries through the connection's own deadline
// (boundByDeadline), not through pgx watching ctx; an earlier cancellation
// of ctx ends only the wait for a connection.
func (s *Store) CurrentStatus(ctx context.Context, userID string) (SessionStatus, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return SessionStatus{}, fmt.Errorf("store: current status: %w", err)
	}
	defer conn.Release()
	qctx, unbound := boundByDeadline(ctx, conn)
	defer unbound()
	st, found, err := readStatus(qctx, conn, liveStatusQuery, userID)
	if err == nil && !found {
		st, found, err = readStatus(qctx, conn, currentStatusQuery, userID)
	}
	switch {
	case err != nil:
		return SessionStatus{}, fmt.Errorf("store: current status: %w", err)
	case !found:
		return SessionStatus{}, ErrNotFound
	}
	return st, nil
}

// readStatus runs a query for statusColumns of at most one row and decodes
// the row, if any.
func readStatus(ctx context.Context, conn *pgxpool.Conn, sql, userID string) (SessionStatus, bool, error) {
	rows, err := conn.Query(ctx, sql, userID)
	if err != nil {
		return SessionStatus{}, false, err
	}
	defer rows.Close()
	if !rows.Next() {
		return SessionStatus{}, false, rows.Err()
	}
	r := statusRow{fields: rows.FieldDescriptions(), vals: rows.RawValues(), types: rows.Conn().TypeMap()}
	st := SessionStatus{
		SessionID: r.text(0), Status: Status(r.text(1)), StatusReason: textOf[Reason](r.nullText(2)),
		DesiredState: DesiredState(r.text(3)), IsConnected: r.boolean(4), IsAuthenticated: r.boolean(5),
		PhoneNumber: textOf[string](r.nullText(6)), UserName: textOf[string](r.nullText(7)),
		PairingCode: textOf[string](r.nullText(8)), LastSeen: r.time(9), ExpiresAt: r.time(10),
		CreatedAt: deref(r.time(11)), UpdatedAt: deref(r.time(12)), LastError: textOf[ErrorCode](r.nullText(13)),
		BannedUntil: r.time(14),
	}
	rows.Close()
	if err := errors.Join(r.err, rows.Err()); err != nil {
		return SessionStatus{}, false, err
	}
	return st, true, nil
}

// boundByDeadline bounds the next query on conn by ctx's deadline through
// the connection's own deadline, and returns the context to run the query
// with (ctx without its cancellation) and what restores the connection
// before it goes back to the pool (no deadline).
//
// pgx watches the context of every query it runs (pgconn's ContextWatcher:
// a channel and a context.AfterFunc registered on the context and removed
// again), so that a cancelled context interrupts the read by setting the
// connection's deadline to now. For GET /status, which clients poll, that
// was about 3% of the request's CPU (pprof of BenchmarkStatus), and the
// requests of one tick all register on the one shared context
// (httpapi's deadlines) under its lock. A request's context there ends
// only at its deadline, so setting that deadline on the connection up front
// bounds the query the same way: a read or write past it fails with a
// timeout, which pgx answers by closing the connection, as it does after
// a cancellation. A ctx without a deadline is left to pgx to watch.
func boundByDeadline(ctx context.Context, conn *pgxpool.Conn) (context.Context, func()) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return ctx, func() {}
	}
	nc := conn.Conn().PgConn().Conn()
	if err := nc.SetDeadline(deadline); err != nil {
		return ctx, func() {} // a closed connection: the query reports it
	}
	return context.WithoutCancel(ctx), func() { _ = nc.SetDeadline(time.Time{}) }
}

// statusRow decodes CurrentStatus's row from the raw values pgx received:
// text columns are their bytes in either wire format, booleans a byte,
// timestamps (binary, as pgx asks for them) microseconds since 2000-01-01
// UTC. A value in a format not handled here (text timestamps, when the
// connection uses the simple protocol) goes through pgx's type map. The
// first error is kept in err.
type statusRow struct {
	fields []pgconn.FieldDescription
	vals   [][]byte
	types  *pgtype.Map
	err    error
}

func (r *statusRow) fail(i int, err error) {
	if r.err == nil {
		r.err = fmt.Errorf("column %s: %w", r.fields[i].Name, err)
	}
}

// text is a NOT NULL text column.
func (r *statusRow) text(i int) string {
	if r.vals[i] == nil {
		r.fail(i, errors.New("NULL in a NOT NULL column"))
	}
	return string(r.vals[i])
}

// nullText is a nullable text column.
func (r *statusRow) nullText(i int) pgtype.Text {
	if r.vals[i] == nil {
		return pgtype.Text{}
	}
	return pgtype.Text{String: string(r.vals[i]), Valid: true}
}

// boolean is a boolean column; NULL is false (is_connected and
// is_authenticated default to false).
func (r *statusRow) boolean(i int) bool {
	v := r.vals[i]
	switch {
	case v == nil:
		return false
	case len(v) == 1 && r.fields[i].Format == pgx.BinaryFormatCode:
		return v[0] == 1
	case len(v) == 1 && r.fields[i].Format == pgx.TextFormatCode:
		return v[0] == 't'
	}
	r.fail(i, fmt.Errorf("unexpected boolean value %q", v))
	return false
}

// pgEpochUnix is where Postgres's binary timestamps count from
// (2000-01-01 UTC), in Unix seconds.
const pgEpochUnix = 946684800

// time is a nullable timestamptz column, in UTC.
func (r *statusRow) time(i int) *time.Time {
	v := r.vals[i]
	if v == nil {
		return nil
	}
	if r.fields[i].Format == pgx.BinaryFormatCode && len(v) == 8 {
		us := int64(binary.BigEndian.Uint64(v))
		if us == math.MaxInt64 || us == math.MinInt64 {
			r.fail(i, errors.New("infinite timestamp"))
			return nil
		}
		t := time.Unix(pgEpochUnix+us/1e6, us%1e6*1e3).UTC()
		return &t
	}
	var ts pgtype.Timestamptz
	if err := r.types.Scan(r.fields[i].DataTypeOID, r.fields[i].Format, v, &ts); err != nil {
		r.fail(i, err)
		return nil
	}
	return timeOf(ts)
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// textOf is a nullable text column as a pointer (nil for NULL).
func textOf[T ~string](t pgtype.Text) *T {
	if !t.Valid {
		return nil
	}
	v := T(t.String)
	return &v
}

// timeOf is a nullable timestamptz column as a pointer (nil for NULL).
func timeOf(t pgtype.Timestamptz) *time.Time {
	if !t.Valid {
		return nil
	}
	return &t.Time
}
