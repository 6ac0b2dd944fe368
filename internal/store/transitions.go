package store

import (
	"context"
	"fmt"
	"time"
)

// The transitions a hosting worker writes. Each is one fenced UPDATE (see
// Fence) that returns the new row, which the caller publishes as an event.

// SetQR records a new QR code (PNG data URL and raw string) for a session
// waiting to be scanned.
func (s *Store) SetQR(ctx context.Context, f Fence, dataURL, raw string) (Session, error) {
	return s.fencedUpdate(ctx, f, `status = $4, status_reason = $5, qr_code = $6, qr_raw = $7`,
		StatusQR, ReasonQRCode, dataURL, raw)
}

// SetPairingCode records the code the user types on their phone to link by
// phone number instead of a QR.
func (s *Store) SetPairingCode(ctx context.Context, f Fence, code string) (Session, error) {
	return s.fencedUpdate(ctx, f, `status = $4, status_reason = $5, pairing_code = $6, qr_code = NULL, qr_raw = NULL`,
		StatusQR, ReasonPairingCode, code)
}

// Linked is what a worker learns when a session connects.
type Linked struct {
	DeviceJID string
	Phone     string
	Name      string
	Reason    Reason // ReasonPaired, ReasonRestored or ReasonReconnected
}

// MarkConnected records a connected, authenticated session: device and
// profile set, QR and pairing code cleared, error cleared, expiry at least
// sessionTTL - ExpiryStep ahead (slidExpiry: a restore of a connected
// session changes no indexed column, TestRestoreIsHOT).
func (s *Store) MarkConnected(ctx context.Context, f Fence, l Linked, sessionTTL time.Duration) (Session, error) {
	return s.fencedUpdate(ctx, f, `status = $9, status_reason = $4, is_connected = true, is_authenticated = true,
		device_jid = $5, phone_number = NULLIF($6, ''), user_name = COALESCE(NULLIF($7, ''), user_name),
		qr_code = NULL, qr_raw = NULL, pairing_code = NULL, last_error = NULL, banned_until = NULL,
		last_seen = now(), expires_at = `+slidExpiry("$8", "$10"),
		l.Reason, l.DeviceJID, l.Phone, l.Name, sessionTTL, StatusConnected, ExpiryStep(sessionTTL))
}

// MarkDevice records the device JID as soon as pairing succeeds, before the
// client has logged in: from then on the session has keys worth keeping.
func (s *Store) MarkDevice(ctx context.Context, f Fence, deviceJID, phone, name string) (Session, error) {
	return s.fencedUpdate(ctx, f, `device_jid = $4, phone_number = NULLIF($5, ''),
		user_name = COALESCE(NULLIF($6, ''), user_name), is_authenticated = true, qr_code = NULL, qr_raw = NULL, pairing_code = NULL`,
		deviceJID, phone, name)
}

// MarkReconnecting records a hosted session whose socket dropped while
// whatsmeow reconnects it; lastErr may be "".
func (s *Store) MarkReconnecting(ctx context.Context, f Fence, reason Reason, lastErr ErrorCode) (Session, error) {
	return s.fencedUpdate(ctx, f, `status = $6, status_reason = $4, is_connected = false,
		last_error = COALESCE(NULLIF($5, ''), last_error)`, reason, lastErr, StatusReconnecting)
}

// MarkBanned records a temporary ban: the session waits, reconnecting,
// until the ban ends (reason temporary_ban, the end in banned_until).
func (s *Store) MarkBanned(ctx context.Context, f Fence, until time.Time, lastErr ErrorCode) (Session, error) {
	return s.fencedUpdate(ctx, f, `status = 'reconnecting', status_reason = 'temporary_ban', is_connected = false,
		banned_until = $4, last_error = COALESCE(NULLIF($5, ''), last_error)`, until, lastErr)
}

// SetUserName records a push name learned after linking.
func (s *Store) SetUserName(ctx context.Context, f Fence, name string) (Session, error) {
	return s.fencedUpdate(ctx, f, `user_name = $4`, name)
}

// Ending says how a session ends. Its final status follows from the
// reason (Reason.EndStatus), so the two can never disagree.
type Ending struct {
	Reason Reason // e.g. ReasonQRTimeout, ReasonPhoneUnlinked, ReasonUserDisconnected
	// LastError is recorded when the end was caused by an error.
	LastError ErrorCode
	// KeysDeleted: the device's keys are gone (logout, unlink), so the row
	// forgets the device and is no longer authenticated.
	KeysDeleted bool
}

// End finishes a session: final status and reason, not connected, QR
// cleared, lease released. Nothing restores it afterwards.
func (s *Store) End(ctx context.Context, f Fence, e Ending) (Session, error) {
	status, ok := e.Reason.EndStatus()
	if !ok {
		return Session{}, fmt.Errorf("store: end session %s: reason %q ends no session", f.SessionID, e.Reason)
	}
	return s.fencedUpdate(ctx, f, `status = $4, status_reason = $5, last_error = COALESCE(NULLIF($6, ''), last_error),
		is_connected = false,
		is_authenticated = CASE WHEN $7 THEN false ELSE is_authenticated END,
		device_jid = CASE WHEN $7 THEN NULL ELSE device_jid END,
		qr_code = NULL, qr_raw = NULL, pairing_code = NULL,
		worker_id = NULL, lease_until = NULL`,
		status, e.Reason, e.LastError, e.KeysDeleted)
}

// SetProxy sets (or, with "", clears) the admin-set proxy of a session. It
// is not fenced: it changes no hosting state, and the worker that hosts the
// session next (a restore, a handoff) connects through it.
func (s *Store) SetProxy(ctx context.Context, sessionID, proxyURL string) (Session, error) {
	rows, err := s.pool.Query(ctx, `UPDATE whatsapp_sessions SET proxy_url = NULLIF($2, ''), updated_at = now()
		WHERE session_id = $1 RETURNING `+sessionColumns, sessionID, proxyURL)
	if err != nil {
		return Session{}, fmt.Errorf("store: set proxy of %s: %w", sessionID, err)
	}
	return collectOne(rows)
}
