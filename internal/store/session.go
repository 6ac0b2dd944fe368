package store

import "time"

// liveStatuses is the SQL list matching Status.Live; it must also match the
// predicates of idx_whatsapp_sessions_hosting and
// uq_whatsapp_sessions_live_user (migrations/00001_init.sql) so the planner
// can use them.
const liveStatuses = `('` + string(StatusPending) + `','` + string(StatusQR) + `','` +
	string(StatusConnected) + `','` + string(StatusReconnecting) + `')`

// sqlLinked and sqlGone are the desired states as SQL literals, for
// predicates that must match the partial indexes' own (a parameter would
// not let the planner use them).
const (
	sqlLinked = `'` + string(DesiredLinked) + `'`
	sqlGone   = `'` + string(DesiredGone) + `'`
)

// Session is one row of whatsapp_sessions.
type Session struct {
	ID              string       `db:"id"`
	UserID          string       `db:"user_id"`
	SessionID       string       `db:"session_id"`
	QRCode          *string      `db:"qr_code"`
	QRRaw           *string      `db:"qr_raw"`
	IsConnected     bool         `db:"is_connected"`
	IsAuthenticated bool         `db:"is_authenticated"`
	PhoneNumber     *string      `db:"phone_number"`
	UserName        *string      `db:"user_name"`
	LastSeen        *time.Time   `db:"last_seen"`
	ExpiresAt       *time.Time   `db:"expires_at"`
	CreatedAt       time.Time    `db:"created_at"`
	UpdatedAt       time.Time    `db:"updated_at"`
	Status          Status       `db:"status"`
	StatusReason    *Reason      `db:"status_reason"`
	DesiredState    DesiredState `db:"desired_state"`
	DeviceJID       *string      `db:"device_jid"`
	WorkerID        *string      `db:"worker_id"`
	LeaseUntil      *time.Time   `db:"lease_until"`
	LeaseEpoch      int64        `db:"lease_epoch"`
	LastError       *ErrorCode   `db:"last_error"`
	PairPhone       *string      `db:"pair_phone"`
	PairingCode     *string      `db:"pairing_code"`
	// BannedUntil is when a temporary ban by WhatsApp ends; nil without one.
	BannedUntil *time.Time `db:"banned_until"`
	// ProxyURL is the admin-set proxy of this session; it may carry a
	// password, so show it only through wa.RedactProxy.
	ProxyURL *string `db:"proxy_url"`
	// LeaseLive is computed by Postgres (lease_until > now()), so callers
	// never compare a lease against their own clock.
	LeaseLive bool `db:"lease_live"`
}

// sessionColumns selects a Session; use with pgx.RowToStructByName.
const sessionColumns = `id, user_id, session_id, qr_code, qr_raw, is_connected, is_authenticated,
	phone_number, user_name, last_seen, expires_at, created_at, updated_at, status, status_reason,
	desired_state, device_jid, worker_id, lease_until, lease_epoch, last_error, pair_phone, pairing_code,
	banned_until, proxy_url,
	COALESCE(lease_until > now(), false) AS lease_live`

// Str returns *p, or "" for nil; handy for the nullable text columns
// (plain strings and the vocabulary's types alike).
func Str[T ~string](p *T) string {
	if p == nil {
		return ""
	}
	return string(*p)
}

// Reason is the session's status reason, "" when it has none.
func (s Session) Reason() Reason {
	if s.StatusReason == nil {
		return ""
	}
	return *s.StatusReason
}
