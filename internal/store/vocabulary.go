package store

import "slices"

// This file is the session vocabulary: the statuses a session goes
// through, the reasons it changes status, and the states a user can want.
// All three are part of the public contract (the API and the events stream
// show them, the page branches on them, docs/openapi.yaml lists them), so
// they are defined here once and nowhere else; a test keeps the OpenAPI
// document's lists equal to these.

// Status is where a session is in its lifecycle (docs/ARCHITECTURE.md,
// "The vocabulary").
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

	// StatusNone is not a row's status: the events stream sends it (with
	// ReasonNoSession) to a caller who has no session at all.
	StatusNone Status = "none"
)

// Statuses lists every status a row can have, live ones first.
func Statuses() []Status {
	return []Status{StatusPending, StatusQR, StatusConnected, StatusReconnecting,
		StatusDisconnected, StatusLoggedOut, StatusExpired, StatusFailed}
}

// Live reports whether a worker hosts, or should host, a client for a
// session in this status.
func (s Status) Live() bool {
	switch s {
	case StatusPending, StatusQR, StatusConnected, StatusReconnecting:
		return true
	}
	return false
}

// DesiredState is what the user wants, as opposed to Status, what is.
type DesiredState string

// Desired states.
const (
	// DesiredLinked: the user wants the session linked (from create on).
	DesiredLinked DesiredState = "linked"
	// DesiredGone: the user (or expiry) asked for the session to end; a
	// worker logs the device out and deletes its keys.
	DesiredGone DesiredState = "gone"
)

// DesiredStates lists every desired state.
func DesiredStates() []DesiredState { return []DesiredState{DesiredLinked, DesiredGone} }

// Reason says why a session's status last changed (status_reason, the
// API's statusReason, an event's reason).
type Reason string

// Status reasons.
const (
	// While pairing.
	ReasonQRCode      Reason = "qr_code"      // a QR code to scan is shown
	ReasonPairingCode Reason = "pairing_code" // a code to type on the phone is shown

	// Connected.
	ReasonPaired      Reason = "paired"      // first connection after a scan or a code
	ReasonRestored    Reason = "restored"    // connected again from stored keys by a new worker
	ReasonReconnected Reason = "reconnected" // the same client got its connection back

	// Reconnecting: the client is trying again, or the session waits for a
	// worker to take it over (a release).
	ReasonConnectionLost Reason = "connection_lost"
	// connect_failure (a refused login), client_outdated (405) and
	// temporary_ban (402, until banned_until) keep a linked session
	// reconnecting until the cause passes; they end only a session that is
	// still pairing (nothing to keep), as failed.
	ReasonConnectFailure     Reason = "connect_failure"
	ReasonWorkerShutdown     Reason = "worker_shutdown"
	ReasonRebalance          Reason = "rebalance"
	ReasonWorkerUnavailable  Reason = "worker_unavailable"
	ReasonRestoreFailed      Reason = "restore_failed"
	ReasonConnectFailed      Reason = "connect_failed" // final for a new pairing, a retry for a linked session
	ReasonKeepaliveTimeout   Reason = "keepalive_timeout"
	ReasonUnreachable        Reason = "unreachable"          // released to another worker after RELEASE_AFTER without a connection
	ReasonHealedAfterUpgrade Reason = "healed_after_upgrade" // failed for a reason that now heals; restored once by migration 00016

	// Final.
	ReasonUserDisconnected  Reason = "user_disconnected"
	ReasonSessionExpired    Reason = "session_expired"
	ReasonQRTimeout         Reason = "qr_timeout"
	ReasonPhoneUnlinked     Reason = "phone_unlinked"
	ReasonLoggedOut         Reason = "logged_out"
	ReasonDeviceKeysMissing Reason = "device_keys_missing"
	ReasonPairError         Reason = "pair_error"
	ReasonPairingCodeFailed Reason = "pairing_code_failed"
	ReasonQRRenderFailed    Reason = "qr_render_failed"
	ReasonStreamReplaced    Reason = "stream_replaced"
	ReasonTemporaryBan      Reason = "temporary_ban"   // see connect_failure
	ReasonClientOutdated    Reason = "client_outdated" // see connect_failure

	// Only in events, never in a row.
	ReasonSessionDeleted Reason = "session_deleted" // cleanup deleted the expired row
	ReasonNoSession      Reason = "no_session"      // with StatusNone: the caller has no session
)

// endStatus is every status reason with the final status a session ending
// for that reason takes, or "" for a reason that never ends a session.
var endStatus = map[Reason]Status{
	ReasonQRCode:             "",
	ReasonPairingCode:        "",
	ReasonPaired:             "",
	ReasonRestored:           "",
	ReasonReconnected:        "",
	ReasonConnectionLost:     "",
	ReasonWorkerShutdown:     "",
	ReasonRebalance:          "",
	ReasonWorkerUnavailable:  "",
	ReasonRestoreFailed:      "",
	ReasonKeepaliveTimeout:   "",
	ReasonUnreachable:        "",
	ReasonHealedAfterUpgrade: "",
	ReasonSessionDeleted:     "",
	ReasonNoSession:          "",

	ReasonConnectFailure:    StatusFailed,
	ReasonConnectFailed:     StatusFailed,
	ReasonUserDisconnected:  StatusDisconnected,
	ReasonSessionExpired:    StatusExpired,
	ReasonQRTimeout:         StatusExpired,
	ReasonPhoneUnlinked:     StatusLoggedOut,
	ReasonLoggedOut:         StatusLoggedOut,
	ReasonDeviceKeysMissing: StatusLoggedOut,
	ReasonPairError:         StatusFailed,
	ReasonPairingCodeFailed: StatusFailed,
	ReasonQRRenderFailed:    StatusFailed,
	ReasonStreamReplaced:    StatusFailed,
	ReasonTemporaryBan:      StatusFailed,
	ReasonClientOutdated:    StatusFailed,
}

// EndStatus is the final status a session that ends for reason r takes;
// ok is false for a reason that ends nothing (End refuses those).
func (r Reason) EndStatus() (s Status, ok bool) {
	s = endStatus[r]
	return s, s != ""
}

// Reasons lists every status reason, sorted: what docs/openapi.yaml's
// StatusReason enum must hold.
func Reasons() []Reason {
	out := make([]Reason, 0, len(endStatus))
	for r := range endStatus {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

// GoneReason is the reason a session whose desired state is gone ends
// with: expiry when either the task that carries the end out or the row
// says so (cleanup marks the row, the task may come from elsewhere), the
// user's disconnect otherwise.
func GoneReason(taskReason, rowReason Reason) Reason {
	if taskReason == ReasonSessionExpired || rowReason == ReasonSessionExpired {
		return ReasonSessionExpired
	}
	return ReasonUserDisconnected
}

// ErrorCode names what went wrong with a session, stably: last_error holds
// the code, the API and the events stream show it with a sentence for
// users (ErrorCode.Message). The raw error, which can carry resolver
// addresses and Go error chains, goes only to the worker's log.
type ErrorCode string

// Error codes.
const (
	ErrServerUnreachable ErrorCode = "server_unreachable"
	ErrConnectRefused    ErrorCode = "connect_refused"
	ErrLoginIncomplete   ErrorCode = "login_incomplete"
	ErrLoginRefused      ErrorCode = "login_refused"
	ErrRestoreFailed     ErrorCode = "restore_failed"
	ErrDeviceKeysMissing ErrorCode = "device_keys_missing"
	ErrPairingFailed     ErrorCode = "pairing_failed"
	ErrPairingCodeFailed ErrorCode = "pairing_code_failed"
	ErrQRFailed          ErrorCode = "qr_failed"
	ErrQRTimeout         ErrorCode = "qr_timeout"
	ErrStreamReplaced    ErrorCode = "stream_replaced"
	ErrTemporaryBan      ErrorCode = "temporary_ban"
	ErrClientOutdated    ErrorCode = "client_outdated"
	ErrLogoutPending     ErrorCode = "logout_pending"
	ErrLogoutUnconfirmed ErrorCode = "logout_unconfirmed"
	ErrUnknown           ErrorCode = "unknown"
)

// errorMessages is every error code with the sentence users see.
var errorMessages = map[ErrorCode]string{
	ErrServerUnreachable: "The WhatsApp server could not be reached.",
	ErrConnectRefused:    "WhatsApp refused the connection.",
	ErrLoginIncomplete:   "Linked, but the first login did not finish in time; another attempt follows.",
	ErrLoginRefused:      "WhatsApp refused the login; link WhatsApp again.",
	ErrRestoreFailed:     "The session could not be restored here; another attempt follows.",
	ErrDeviceKeysMissing: "This device's keys are gone; link WhatsApp again.",
	ErrPairingFailed:     "Linking did not complete; create a new session to try again.",
	ErrPairingCodeFailed: "WhatsApp did not issue a pairing code; create a new session to try again.",
	ErrQRFailed:          "The QR code could not be shown; create a new session to try again.",
	ErrQRTimeout:         "Nobody scanned the QR code in time.",
	ErrStreamReplaced:    "Another client logged in with this device; this one stopped.",
	ErrTemporaryBan:      "WhatsApp has temporarily banned this account.",
	ErrClientOutdated:    "WhatsApp rejected this client version as outdated.",
	ErrLogoutPending:     "WhatsApp has not confirmed the logout yet; another attempt follows.",
	ErrLogoutUnconfirmed: "WhatsApp did not confirm the logout; the device's keys were deleted anyway.",
	ErrUnknown:           "Something went wrong with this session.",
}

// Message is the sentence users see for code c. A value that is not a
// known code (a row written before codes existed held the raw error) gets
// ErrUnknown's sentence, so no raw error reaches a user.
func (c ErrorCode) Message() string {
	if m, ok := errorMessages[c]; ok {
		return m
	}
	return errorMessages[ErrUnknown]
}

// Known returns c, or ErrUnknown when c is not a code (see Message).
func (c ErrorCode) Known() ErrorCode {
	if _, ok := errorMessages[c]; ok {
		return c
	}
	return ErrUnknown
}

// ErrorCodes lists every error code, sorted: what docs/openapi.yaml's
// ErrorCode enum must hold.
func ErrorCodes() []ErrorCode {
	out := make([]ErrorCode, 0, len(errorMessages))
	for c := range errorMessages {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// The message vocabulary: directions, statuses and failure reasons of
// messages (migrations/00017_messages.sql; docs/openapi.yaml's
// MessageStatus and MessageReason).

// Message directions.
const (
	DirectionIn  = "in"
	DirectionOut = "out"
)

// Message statuses. Outbound: queued, then sent (WhatsApp's server acked
// it), delivered, read; or failed with a MessageReason. Inbound: received.
const (
	MessageQueued    = "queued"
	MessageSent      = "sent"
	MessageDelivered = "delivered"
	MessageRead      = "read"
	MessageFailed    = "failed"
	MessageReceived  = "received"
)

// MessageStatuses lists every message status.
func MessageStatuses() []string {
	return []string{MessageQueued, MessageSent, MessageDelivered, MessageRead, MessageFailed, MessageReceived}
}

// Reasons an outbound message fails with.
const (
	ReasonNotOnWhatsApp = "not_on_whatsapp" // the number has no WhatsApp account
	ReasonSessionEnded  = "session_ended"   // unlinked or disconnected before it went out
	ReasonExpired       = "expired"         // waited longer than MESSAGE_TTL
	ReasonRejected      = "rejected"        // WhatsApp answered the send with an error
)

// MessageReasons lists every reason a message fails with.
func MessageReasons() []string {
	return []string{ReasonNotOnWhatsApp, ReasonSessionEnded, ReasonExpired, ReasonRejected}
}
