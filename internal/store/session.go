package store

import "time"

// Status is where a session is in its lifecycle (DESIGN.md "Data model").
type Status string

// Session statuses. pending, qr, connected and reconnecting are live: a
// worker hosts, or should host, a client for them. The others are final.
const (
	StatusPending      Status = "pending"
	StatusQR           Status = "qr"
	StatusConnected    Status = "connected"
	StatusReconnecting Status = "reconnecting"
	StatusDisconnected Status = "disconnected"
	StatusLoggedOut    Status = "logged_out"
	StatusExpired      Status = "expired"
	StatusFailed       Status = "failed"
)

// Live reports whether a worker hosts, or should host, a client for a
// session in this status.
func (s Status) Live() bool {
	switch s {
	case StatusPending, StatusQR, StatusConnected, StatusReconnecting:
		return true
	}
	return false
}

// Desired states: what the user wants, as opposed to Status, what is.
const (
	DesiredLinked = "linked"
	DesiredGone   = "gone"
)

// liveStatuses is the SQL list matching Status.Live; it must also match the
// predicates of idx_whatsapp_sessions_hosting and
// uq_whatsapp_sessions_live_user (migrations/00001_init.sql) so the planner
// can use them.
const liveStatuses = `('pending','qr','connected','reconnecting')`

// Session is one row of whatsapp_sessions.
type Session struct {
	ID              string     `db:"id"`
	UserID          string     `db:"user_id"`
	SessionID       string     `db:"session_id"`
	QRCode          *string    `db:"qr_code"`
	QRRaw           *string    `db:"qr_raw"`
	IsConnected     bool       `db:"is_connected"`
	IsAuthenticated bool       `db:"is_authenticated"`
	PhoneNumber     *string    `db:"phone_number"`
	UserName        *string    `db:"user_name"`
	LastSeen        *time.Time `db:"last_seen"`
	ExpiresAt       *time.Time `db:"expires_at"`
	CreatedAt       time.Time  `db:"created_at"`
	UpdatedAt       time.Time  `db:"updated_at"`
	Status          Status     `db:"status"`
	StatusReason    *string    `db:"status_reason"`
	DesiredState    string     `db:"desired_state"`
	DeviceJID       *string    `db:"device_jid"`
	WorkerID        *string    `db:"worker_id"`
	LeaseUntil      *time.Time `db:"lease_until"`
	LeaseEpoch      int64      `db:"lease_epoch"`
	LastError       *string    `db:"last_error"`
	PairPhone       *string    `db:"pair_phone"`
	PairingCode     *string    `db:"pairing_code"`
	// LeaseLive is computed by Postgres (lease_until > now()), so callers
	// never compare a lease against their own clock.
	LeaseLive bool `db:"lease_live"`
}

// sessionColumns selects a Session; use with pgx.RowToStructByName.
const sessionColumns = `id, user_id, session_id, qr_code, qr_raw, is_connected, is_authenticated,
	phone_number, user_name, last_seen, expires_at, created_at, updated_at, status, status_reason,
	desired_state, device_jid, worker_id, lease_until, lease_epoch, last_error, pair_phone, pairing_code,
	COALESCE(lease_until > now(), false) AS lease_live`

// Str returns *p, or "" for nil; handy for the nullable text columns.
func Str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
