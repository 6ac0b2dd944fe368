package webhook

import (
	"encoding/json"
	"fmt"
	"time"

	"wasessions/internal/store"
	"wasessions/internal/views"
)

// Payload is the JSON body of every webhook: what happened (type), when
// (timestamp, the commit of the change), the session's sequence number of
// the event (it only grows: a receiver orders and deduplicates by it), and
// data, the view the API shows for the session or message.
type Payload struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	SessionID string    `json:"sessionId"`
	Sequence  int64     `json:"sequence"`
	Data      any       `json:"data"`
}

// sessionSnapshot is a whatsapp_sessions row as the trigger stored it
// (to_jsonb: column names as keys).
type sessionSnapshot struct {
	UserID          string             `json:"user_id"`
	SessionID       string             `json:"session_id"`
	IsConnected     *bool              `json:"is_connected"`
	IsAuthenticated *bool              `json:"is_authenticated"`
	PhoneNumber     *string            `json:"phone_number"`
	UserName        *string            `json:"user_name"`
	LastSeen        *time.Time         `json:"last_seen"`
	ExpiresAt       *time.Time         `json:"expires_at"`
	CreatedAt       *time.Time         `json:"created_at"`
	UpdatedAt       *time.Time         `json:"updated_at"`
	Status          store.Status       `json:"status"`
	StatusReason    *store.Reason      `json:"status_reason"`
	DesiredState    store.DesiredState `json:"desired_state"`
	LastError       *store.ErrorCode   `json:"last_error"`
	PairingCode     *string            `json:"pairing_code"`
	BannedUntil     *time.Time         `json:"banned_until"`
}

// messageSnapshot is a messages row as the trigger stored it.
type messageSnapshot struct {
	ID           string     `json:"id"`
	UserID       string     `json:"user_id"`
	SessionID    string     `json:"session_id"`
	Direction    string     `json:"direction"`
	Chat         string     `json:"chat"`
	Text         string     `json:"text"`
	WAMessageID  string     `json:"wa_message_id"`
	Status       string     `json:"status"`
	StatusReason *string    `json:"status_reason"`
	CreatedAt    time.Time  `json:"created_at"`
	UpdatedAt    time.Time  `json:"updated_at"`
	SentAt       *time.Time `json:"sent_at"`
	DeliveredAt  *time.Time `json:"delivered_at"`
	ReadAt       *time.Time `json:"read_at"`
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// Render builds an event's body from its snapshot. The delivery stores
// the first rendering (store.SetWebhookBody) and every attempt sends those
// bytes, so a retry is byte for byte the first attempt.
func Render(ev store.WebhookEvent) ([]byte, error) {
	p := Payload{ID: ev.ID, Type: ev.Type, Timestamp: ev.OccurredAt.UTC(), SessionID: ev.SessionID, Sequence: ev.Sequence}
	switch ev.Type {
	case store.EventSessionStatus:
		var s sessionSnapshot
		if err := json.Unmarshal(ev.Snapshot, &s); err != nil {
			return nil, fmt.Errorf("webhook: event %s snapshot: %w", ev.ID, err)
		}
		p.Data = views.SessionOf(store.Session{
			UserID: s.UserID, SessionID: s.SessionID,
			IsConnected: deref(s.IsConnected), IsAuthenticated: deref(s.IsAuthenticated),
			PhoneNumber: s.PhoneNumber, UserName: s.UserName, LastSeen: s.LastSeen, ExpiresAt: s.ExpiresAt,
			CreatedAt: deref(s.CreatedAt), UpdatedAt: deref(s.UpdatedAt),
			Status: s.Status, StatusReason: s.StatusReason, DesiredState: s.DesiredState,
			LastError: s.LastError, PairingCode: s.PairingCode, BannedUntil: s.BannedUntil,
		})
	case store.EventMessageReceived, store.EventMessageStatus:
		var m messageSnapshot
		if err := json.Unmarshal(ev.Snapshot, &m); err != nil {
			return nil, fmt.Errorf("webhook: event %s snapshot: %w", ev.ID, err)
		}
		p.Data = views.MessageOf(store.Message{
			ID: m.ID, UserID: m.UserID, SessionID: m.SessionID, Direction: m.Direction, Chat: m.Chat,
			Text: m.Text, WAMessageID: m.WAMessageID, Status: m.Status, StatusReason: m.StatusReason,
			CreatedAt: m.CreatedAt, UpdatedAt: m.UpdatedAt, SentAt: m.SentAt, DeliveredAt: m.DeliveredAt, ReadAt: m.ReadAt,
		})
	default:
		return nil, fmt.Errorf("webhook: event %s has unknown type %q", ev.ID, ev.Type)
	}
	return json.Marshal(p)
}
