// Package views is how the service shows sessions and messages to the
// outside: the API's JSON answers and the data of webhook events are the
// same structs, built by the same functions, so a receiver of a webhook
// sees exactly what GET would have shown at that moment.
package views

import (
	"time"

	"wasessions/internal/store"
)

// Session is a session as the API shows it: the camelCase fields clients
// rely on (docs/ARCHITECTURE.md, "Compatibility") plus what the
// distributed design adds. Nullable columns are null, never omitted, so
// clients can rely on every key being there.
type Session struct {
	SessionID       string             `json:"sessionId"`
	Status          string             `json:"status"`
	StatusReason    *store.Reason      `json:"statusReason"`
	DesiredState    store.DesiredState `json:"desiredState"`
	IsConnected     bool               `json:"isConnected"`
	IsAuthenticated bool               `json:"isAuthenticated"`
	PhoneNumber     *string            `json:"phoneNumber"`
	UserName        *string            `json:"userName"`
	PairingCode     *string            `json:"pairingCode"`
	LastSeen        *time.Time         `json:"lastSeen"`
	ExpiresAt       *time.Time         `json:"expiresAt"`
	CreatedAt       time.Time          `json:"createdAt"`
	UpdatedAt       time.Time          `json:"updatedAt"`
	// LastError is the sentence for users, LastErrorCode the stable code
	// behind it (store.ErrorCode); the raw error is only in the worker's log.
	LastError     *string          `json:"lastError"`
	LastErrorCode *store.ErrorCode `json:"lastErrorCode"`
	// BannedUntil: WhatsApp banned the account until then (statusReason
	// temporary_ban); the session reconnects by itself after it.
	BannedUntil *time.Time `json:"bannedUntil"`
}

// SessionOf is s as the API shows it.
func SessionOf(s store.Session) Session { return StatusOf(s.StatusOf()) }

// StatusOf is a session's status as the API shows it: everything Session
// holds, read without the rest of the row (store.CurrentStatus).
func StatusOf(s store.SessionStatus) Session {
	v := Session{
		SessionID:       s.SessionID,
		Status:          string(s.Status),
		StatusReason:    s.StatusReason,
		DesiredState:    s.DesiredState,
		IsConnected:     s.IsConnected,
		IsAuthenticated: s.IsAuthenticated,
		PhoneNumber:     E164(s.PhoneNumber),
		UserName:        s.UserName,
		PairingCode:     s.PairingCode,
		LastSeen:        UTC(s.LastSeen),
		ExpiresAt:       UTC(s.ExpiresAt),
		CreatedAt:       s.CreatedAt.UTC(),
		UpdatedAt:       s.UpdatedAt.UTC(),
		BannedUntil:     UTC(s.BannedUntil),
	}
	if s.LastError != nil {
		code := s.LastError.Known()
		msg := code.Message()
		v.LastError, v.LastErrorCode = &msg, &code
	}
	return v
}

// Message is a message as the API shows it.
type Message struct {
	MessageID    string     `json:"messageId"`
	SessionID    string     `json:"sessionId"`
	Direction    string     `json:"direction"`
	Chat         string     `json:"chat"`
	Text         string     `json:"text"`
	Status       string     `json:"status"`
	StatusReason *string    `json:"statusReason"`
	WAMessageID  string     `json:"waMessageId"`
	CreatedAt    time.Time  `json:"createdAt"`
	UpdatedAt    time.Time  `json:"updatedAt"`
	SentAt       *time.Time `json:"sentAt"`
	DeliveredAt  *time.Time `json:"deliveredAt"`
	ReadAt       *time.Time `json:"readAt"`
}

// MessageOf is m as the API shows it.
func MessageOf(m store.Message) Message {
	return Message{
		MessageID: m.ID, SessionID: m.SessionID, Direction: m.Direction, Chat: m.Chat, Text: m.Text,
		Status: m.Status, StatusReason: m.StatusReason, WAMessageID: m.WAMessageID,
		CreatedAt: m.CreatedAt.UTC(), UpdatedAt: m.UpdatedAt.UTC(),
		SentAt: UTC(m.SentAt), DeliveredAt: UTC(m.DeliveredAt), ReadAt: UTC(m.ReadAt),
	}
}

// UTC is t in UTC, nil for nil.
func UTC(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// E164 shows a phone number with its leading '+'. Workers store it
// without one (whatsmeow's JID user part).
func E164(p *string) *string {
	if p == nil || *p == "" {
		return nil
	}
	if (*p)[0] == '+' {
		return p
	}
	s := "+" + *p
	return &s
}
