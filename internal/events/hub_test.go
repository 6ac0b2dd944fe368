package events_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"wasessions/internal/events"
	"wasessions/internal/testenv"
)

func signalled(l *events.Listener, within time.Duration) bool {
	select {
	case _, open := <-l.C:
		return open
	case <-time.After(within):
		return false
	}
}

// The hub signals a user's listeners on that user's events only, ignores
// a message whose payload names another user than its channel, and
// coalesces signals nobody has read yet.
func TestHubSignalsOnlyTheUsersListeners(t *testing.T) {
	r := testenv.NewRedisDB(t)
	b := bus(t, r)
	h := events.NewHub(b, events.HubOptions{})
	t.Cleanup(h.Close)
	ctx := context.Background()
	la, err := h.Stream(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := h.Subscribe(ctx, bob)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, events.Event{Type: events.TypeStatus, SessionID: "s-a", UserID: alice, Status: "qr"}); err != nil {
		t.Fatal(err)
	}
	if !signalled(la, 10*time.Second) {
		t.Fatal("alice's listener was not signalled")
	}
	// A payload claiming bob's user on alice's channel is dropped, and
	// bob hears nothing of alice.
	raw := redis.NewClient(r.Options())
	defer raw.Close()
	if err := raw.Publish(ctx, b.Channel(alice), `{"userId":"`+bob+`","type":"qr"}`).Err(); err != nil {
		t.Fatal(err)
	}
	if signalled(la, 300*time.Millisecond) || signalled(lb, 300*time.Millisecond) {
		t.Fatal("a mismatched payload or another user's event signalled a listener")
	}
	// Three events unread: one pending signal. Alice's event, published
	// after them, is a barrier: the hub dispatches in order, so once alice
	// is signalled all three of bob's were dispatched.
	for i := 0; i < 3; i++ {
		if err := b.Publish(ctx, events.Event{Type: events.TypeStatus, SessionID: "s-b", UserID: bob, Status: "qr"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Publish(ctx, events.Event{Type: events.TypeStatus, SessionID: "s-a", UserID: alice, Status: "qr"}); err != nil {
		t.Fatal(err)
	}
	if !signalled(la, 10*time.Second) {
		t.Fatal("alice's listener was not signalled")
	}
	if !signalled(lb, 10*time.Second) {
		t.Fatal("bob's listener was not signalled")
	}
	if signalled(lb, 300*time.Millisecond) {
		t.Fatal("unread signals were not coalesced")
	}
}

// Caps: a user's streams, then the process's; a closed stream frees its
// place; Subscribe (a bounded wait, not a stream) is not counted.
func TestHubCaps(t *testing.T) {
	h := events.NewHub(bus(t, testenv.NewRedisDB(t)), events.HubOptions{PerUser: 2, Total: 3})
	t.Cleanup(h.Close)
	ctx := context.Background()
	a1, _ := h.Stream(ctx, alice)
	if _, err := h.Stream(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Stream(ctx, alice); !errors.Is(err, events.ErrUserStreams) {
		t.Fatalf("third stream of a user: %v, want ErrUserStreams", err)
	}
	if _, err := h.Subscribe(ctx, alice); err != nil {
		t.Fatalf("a create's wait counted as a stream: %v", err)
	}
	if _, err := h.Stream(ctx, bob); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Stream(ctx, "cccccccc-cccc-4ccc-8ccc-cccccccccccc"); !errors.Is(err, events.ErrProcessStreams) {
		t.Fatalf("stream over the process cap: %v, want ErrProcessStreams", err)
	}
	a1.Close()
	a1.Close() // twice is fine
	if _, err := h.Stream(ctx, alice); err != nil {
		t.Fatalf("after a close: %v", err)
	}
	if got := h.Streams(); got != 3 {
		t.Fatalf("Streams() = %d, want 3", got)
	}
}

// When Redis goes away every listener ends (so streams end and their
// clients read the current state on reconnect, instead of staying deaf);
// while it is away a new stream is refused; once it is back the hub
// subscribes again.
func TestHubEndsListenersWhenRedisIsLost(t *testing.T) {
	rs := testenv.StartRedisServer(t)
	c := redis.NewClient(&redis.Options{Addr: rs.Addr, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	b := events.NewBus(c)
	h := events.NewHub(b, events.HubOptions{Probe: 200 * time.Millisecond})
	t.Cleanup(h.Close)
	ctx := context.Background()
	l, err := h.Stream(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	rs.Stop()
	select {
	case _, open := <-l.C:
		if open {
			t.Fatal("a signal, not an end")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the listener outlived the Redis connection")
	}
	if h.Streams() != 0 {
		t.Fatalf("ended streams still counted: %d", h.Streams())
	}
	if _, err := h.Stream(ctx, alice); err == nil {
		t.Fatal("a stream opened while Redis is down")
	}
	rs.Start()
	var l2 *events.Listener
	deadline := time.Now().Add(30 * time.Second)
	for l2 == nil {
		if l2, err = h.Stream(ctx, alice); err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("no stream after Redis came back: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if err := b.Publish(ctx, events.Event{Type: events.TypeStatus, SessionID: "s", UserID: alice, Status: "qr"}); err != nil {
		t.Fatal(err)
	}
	if !signalled(l2, 10*time.Second) {
		t.Fatal("no signal after resubscribing")
	}
}
