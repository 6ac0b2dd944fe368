package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"wasessions/internal/events"
	"wasessions/internal/testenv"
)

const (
	alice = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	bob   = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
)

func bus(t *testing.T, r testenv.RedisDB) *events.Bus {
	t.Helper()
	c := redis.NewClient(r.Options())
	t.Cleanup(func() { c.Close() })
	return events.NewBus(c)
}

// A subscriber hears its own user's events, in order, and never another
// user's; and a deployment on another Redis database of the same server
// hears nothing of this one (pub/sub channels are server-wide).
func TestSubscribersHearOnlyTheirOwnEvents(t *testing.T) {
	r1, r2 := testenv.NewRedisDB(t), testenv.NewRedisDB(t)
	b1, other := bus(t, r1), bus(t, r2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	subAlice, err := b1.Subscribe(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	defer subAlice.Close()
	subOtherDB, err := other.Subscribe(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	defer subOtherDB.Close()

	publish := func(b *events.Bus, user, session, status string) {
		t.Helper()
		if err := b.Publish(ctx, events.Event{Type: events.TypeStatus, SessionID: session, UserID: user, Status: status}); err != nil {
			t.Fatal(err)
		}
	}
	publish(b1, bob, "s-bob", "connected")
	publish(b1, alice, "s-alice", "qr")
	publish(b1, alice, "s-alice", "connected")

	for _, want := range []string{"qr", "connected"} {
		select {
		case e := <-subAlice.C:
			if e.UserID != alice || e.SessionID != "s-alice" || e.Status != want {
				t.Fatalf("alice got %+v, want her %s event", e, want)
			}
		case <-ctx.Done():
			t.Fatalf("alice never got her %s event", want)
		}
	}
	// A marker on the other database, published last, must be the first
	// thing its subscriber hears.
	publish(other, alice, "s-marker", "pending")
	select {
	case e := <-subOtherDB.C:
		if e.SessionID != "s-marker" {
			t.Fatalf("a subscriber on another Redis database heard %+v", e)
		}
	case <-ctx.Done():
		t.Fatal("no marker")
	}
	select {
	case e := <-subAlice.C:
		t.Fatalf("alice heard an event not hers: %+v", e)
	case <-time.After(200 * time.Millisecond):
	}
}

// An event without a user cannot be routed and is refused.
func TestPublishNeedsAUser(t *testing.T) {
	b := bus(t, testenv.NewRedisDB(t))
	if err := b.Publish(context.Background(), events.Event{Type: events.TypeStatus, SessionID: "s"}); err == nil {
		t.Fatal("published an event with no user")
	}
}
