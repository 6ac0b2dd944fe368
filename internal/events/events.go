// Package events carries session state changes from the worker that made
// them to every API replica, over Redis pub/sub: one channel per user, so a
// subscriber only ever receives its own user's events. Pub/sub is
// fire-and-forget by design; Postgres holds the truth, and a subscriber
// that (re)connects reads the current state from there first.
//
// The API listens through a Hub (hub.go): one subscription per process,
// fanned out in memory, passing on only "this user's session changed".
// Bus.Subscribe, one connection per subscriber with the events' contents,
// is for tests and tools that watch what workers publish.
package events

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"wasessions/internal/store"
)

// Event types.
const (
	// TypeQR: a new QR code to show (QRCode, QRRaw set).
	TypeQR = "qr"
	// TypePairingCode: a code to type on the phone (PairingCode set).
	TypePairingCode = "pairing_code"
	// TypeStatus: the session's status changed (Status, Reason set).
	TypeStatus = "status"
	// TypeMessageReceived: a text arrived and is stored (MessageID set;
	// read it with GET .../messages/{messageId}).
	TypeMessageReceived = "message.received"
	// TypeMessageStatus: an outbound message's status changed (MessageID,
	// Status, Reason set).
	TypeMessageStatus = "message.status"
)

// Event is one change of one session.
type Event struct {
	Type        string `json:"type"`
	SessionID   string `json:"sessionId"`
	UserID      string `json:"-"`
	Status      string `json:"status"`
	Reason      string `json:"reason,omitempty"`
	QRCode      string `json:"qrCode,omitempty"`
	QRRaw       string `json:"qrRaw,omitempty"`
	PairingCode string `json:"pairingCode,omitempty"`
	PhoneNumber string `json:"phoneNumber,omitempty"`
	UserName    string `json:"userName,omitempty"`
	LastError   string `json:"lastError,omitempty"`
	// BannedUntil is when WhatsApp's temporary ban of the account ends
	// (reason temporary_ban); the session reconnects by itself then.
	BannedUntil *time.Time `json:"bannedUntil,omitempty"`
	MessageID   string     `json:"messageId,omitempty"`
	At          time.Time  `json:"at"`
}

// wire is Event as published: UserID included.
type wire struct {
	Event
	UserID string `json:"userId"`
}

// FromSession builds the event of type typ describing sess as it is now.
func FromSession(typ string, sess store.Session) Event {
	e := Event{
		Type:        typ,
		SessionID:   sess.SessionID,
		UserID:      sess.UserID,
		Status:      string(sess.Status),
		Reason:      store.Str(sess.StatusReason),
		PhoneNumber: store.Str(sess.PhoneNumber),
		UserName:    store.Str(sess.UserName),
		LastError:   store.Str(sess.LastError),
		At:          sess.UpdatedAt,
	}
	if sess.BannedUntil != nil {
		t := sess.BannedUntil.UTC()
		e.BannedUntil = &t
	}
	switch typ {
	case TypeQR:
		e.QRCode, e.QRRaw = store.Str(sess.QRCode), store.Str(sess.QRRaw)
	case TypePairingCode:
		e.PairingCode = store.Str(sess.PairingCode)
	}
	return e
}

// FromMessage builds the event of type typ (TypeMessageReceived or
// TypeMessageStatus) for m. It carries no text: the client reads the
// message from the API, which is where access is checked.
func FromMessage(typ string, m store.Message) Event {
	return Event{
		Type: typ, SessionID: m.SessionID, UserID: m.UserID, MessageID: m.ID,
		Status: m.Status, Reason: store.Str(m.StatusReason), At: m.UpdatedAt,
	}
}

// Bus publishes and subscribes on the process's shared Redis client.
type Bus struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewBus returns a Bus on rdb. Redis pub/sub channels are server-wide, not
// per logical database, so the channel names carry the client's database
// number: two deployments (or test runs) sharing one Redis server on
// different databases never hear each other's events.
func NewBus(rdb redis.UniversalClient) *Bus {
	db := 0
	if c, ok := rdb.(*redis.Client); ok {
		db = c.Options().DB
	}
	return &Bus{rdb: rdb, prefix: fmt.Sprintf("wa:events:db%d:user:", db)}
}

// Channel is the pub/sub channel of one user's events.
func (b *Bus) Channel(userID string) string { return b.prefix + userID }

// Publish sends e to its user's channel.
func (b *Bus) Publish(ctx context.Context, e Event) error {
	if e.UserID == "" {
		return fmt.Errorf("events: publish %s for session %s: no user id", e.Type, e.SessionID)
	}
	payload, err := json.Marshal(wire{Event: e, UserID: e.UserID})
	if err != nil {
		return fmt.Errorf("events: encode: %w", err)
	}
	if err := b.rdb.Publish(ctx, b.Channel(e.UserID), payload).Err(); err != nil {
		return fmt.Errorf("events: publish: %w", err)
	}
	return nil
}

// Subscription is a live subscription to one user's events.
type Subscription struct {
	ps *redis.PubSub
	C  <-chan Event
}

// Close ends the subscription and closes C.
func (s *Subscription) Close() error { return s.ps.Close() }

// Subscribe starts receiving userID's events on a connection of its own
// (tests and tools; the API uses Hub). It returns once Redis has
// confirmed the subscription, so no event published after it returns is
// missed. C is closed when the subscription ends or ctx is done.
func (b *Bus) Subscribe(ctx context.Context, userID string) (*Subscription, error) {
	ps := b.rdb.Subscribe(ctx, b.Channel(userID))
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return nil, fmt.Errorf("events: subscribe: %w", err)
	}
	out := make(chan Event, 16)
	go func() {
		defer close(out)
		in := ps.Channel()
		for {
			select {
			case <-ctx.Done():
				ps.Close()
				return
			case msg, ok := <-in:
				if !ok {
					return
				}
				var w wire
				if err := json.Unmarshal([]byte(msg.Payload), &w); err != nil || w.UserID != userID {
					continue // not ours or not an event: never forward it
				}
				w.Event.UserID = w.UserID
				select {
				case out <- w.Event:
				case <-ctx.Done():
					ps.Close()
					return
				}
			}
		}
	}()
	return &Subscription{ps: ps, C: out}, nil
}
