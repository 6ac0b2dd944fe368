package events_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"wasessions/internal/events"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
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

// An operator's StreamAll listener is signalled by every user's changes
// and collects the sessions they name (once each, until taken); a payload
// naming another user than its channel is dropped as for any listener; a
// change naming no session, or more sessions than it keeps, is an
// overflow (read everything again), never an unbounded set. It counts
// against the operator's stream cap.
func TestHubStreamAllCollectsEveryUsersChanges(t *testing.T) {
	r := testenv.NewRedisDB(t)
	b := bus(t, r)
	h := events.NewHub(b, events.HubOptions{PerUser: 1})
	t.Cleanup(h.Close)
	ctx := context.Background()
	const operator = "00000000-0000-4000-8000-0000000000ad"
	all, err := h.StreamAll(ctx, operator)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.StreamAll(ctx, operator); !errors.Is(err, events.ErrUserStreams) {
		t.Fatalf("a second stream over the operator's cap of 1: %v, want ErrUserStreams", err)
	}
	la, err := h.Stream(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(user, session string) {
		t.Helper()
		if err := b.Publish(ctx, events.Event{Type: events.TypeStatus, SessionID: session, UserID: user, Status: "connected"}); err != nil {
			t.Fatal(err)
		}
	}
	publish(alice, "s-a")
	publish(bob, "s-b")
	publish(bob, "s-b")
	raw := redis.NewClient(r.Options())
	defer raw.Close()
	if err := raw.Publish(ctx, b.Channel(alice), `{"userId":"`+bob+`","sessionId":"forged"}`).Err(); err != nil {
		t.Fatal(err)
	}
	publish(alice, "s-barrier") // dispatched in order: once seen, all above were
	if !signalled(la, 10*time.Second) {
		t.Fatal("alice's own listener was not signalled")
	}
	got := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for !got["s-barrier"] {
		if !signalled(all, time.Until(deadline)) {
			t.Fatalf("the operator's listener was not signalled of every change; has %v", got)
		}
		ids, overflow := all.Changed()
		if overflow {
			t.Fatalf("overflow after four changes")
		}
		// Once each until taken: one read never names a session twice (a
		// read between bob's two changes may name s-b again later).
		once := map[string]bool{}
		for _, id := range ids {
			if once[id] {
				t.Errorf("session %s reported twice in one read", id)
			}
			once[id] = true
			got[id] = true
		}
	}
	if !got["s-a"] || !got["s-b"] || got["forged"] || len(got) != 3 {
		t.Fatalf("changed sessions %v, want s-a, s-b, s-barrier", got)
	}
	// alice's listener may still hold a signal from above (the wait took
	// the one for s-a; s-barrier's came after): take it, or the barrier
	// wait below returns at once, before bob's changes are in. No older
	// signal can follow: the operator's listener has s-barrier, and the hub
	// signals a user's listeners before the operators' for each change.
	select {
	case <-la.C:
	default:
	}

	// overflows reads the operator's listener only once the barrier after
	// publishAll has reached alice's listener: the hub dispatches in order,
	// so every change before it has reached the operator's listener too.
	// Reading while the changes arrive would drain the set before it fills.
	overflows := func(publishAll func()) {
		t.Helper()
		publishAll()
		publish(alice, "s-barrier-2")
		if !signalled(la, 10*time.Second) {
			t.Fatal("alice's listener was not signalled of the barrier")
		}
		if !signalled(all, time.Second) {
			t.Fatal("the operator's listener was not signalled")
		}
		ids, overflow := all.Changed()
		if !overflow {
			t.Fatalf("no overflow reported: %d ids pending (keeps at most %d)", len(ids), events.MaxPendingChanges)
		}
		if len(ids) != 0 {
			t.Errorf("an overflow came with %d ids, want none", len(ids))
		}
	}
	overflows(func() {
		for i := 0; i <= events.MaxPendingChanges; i++ {
			publish(bob, "s-"+strconv.Itoa(i))
		}
	})
	overflows(func() {
		if err := raw.Publish(ctx, b.Channel(bob), `{"userId":"`+bob+`"}`).Err(); err != nil {
			t.Fatal(err)
		}
	})
	all.Close()
	if _, err := h.StreamAll(ctx, operator); err != nil {
		t.Fatalf("after Close the operator's cap is free again: %v", err)
	}
}

// Take says what the coalesced signals were: a session change, and each
// message change once, in order; past PendingMessages the listener is
// told it overflowed instead of the hub holding more.
func TestHubListenerTakesMessageChanges(t *testing.T) {
	r := testenv.NewRedisDB(t)
	b := bus(t, r)
	h := events.NewHub(b, events.HubOptions{PendingMessages: 3})
	t.Cleanup(h.Close)
	ctx := context.Background()
	l, err := h.Stream(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	// l is read once per round, after the round's barrier (a session
	// change, published last) is in: a take while the changes arrive
	// legitimately reports m1 again, or makes room for a fourth change
	// (CI read n0 - n2, then n3, and no overflow). A second listener of
	// alice's witnesses the barrier instead; the hub hands a change to all
	// of a user's listeners at once, so once the witness has taken it, l
	// holds everything published before it.
	witness, err := h.Stream(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	pub := func(e events.Event) {
		t.Helper()
		e.UserID = alice
		if err := b.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	pub(events.Event{Type: events.TypeMessageStatus, MessageID: "m1", Status: "sent"})
	pub(events.Event{Type: events.TypeMessageStatus, MessageID: "m1", Status: "sent"}) // again: once
	pub(events.Event{Type: events.TypeMessageReceived, MessageID: "m2", Status: "received"})
	pub(events.Event{Type: events.TypeMessageStatus, MessageID: "m1"}) // no status: dropped
	pub(events.Event{Type: events.TypeStatus, SessionID: "s-a", Status: "connected"})
	if !signalled(l, 10*time.Second) {
		t.Fatal("not signalled")
	}
	// afterBarrier waits until the witness has taken the barrier, then
	// takes l's changes.
	afterBarrier := func() events.Changes {
		testfactory.EventuallyIn(t, "the session change (published last) to be taken", 10*time.Second, func() bool {
			return witness.Take().Session
		})
		return l.Take()
	}
	got := afterBarrier()
	want := []events.MessageChange{{MessageID: "m1", Status: "sent"}, {MessageID: "m2", Status: "received"}}
	if !got.Session || fmt.Sprint(got.Messages) != fmt.Sprint(want) || got.Overflow {
		t.Fatalf("took %+v, want session, %v, no overflow", got, want)
	}
	// Four unread message changes with room for three: overflow.
	for i := range 4 {
		pub(events.Event{Type: events.TypeMessageStatus, MessageID: fmt.Sprint("n", i), Status: "sent"})
	}
	pub(events.Event{Type: events.TypeStatus, SessionID: "s-a", Status: "connected"}) // barrier
	got = afterBarrier()
	want = []events.MessageChange{{MessageID: "n0", Status: "sent"}, {MessageID: "n1", Status: "sent"}, {MessageID: "n2", Status: "sent"}}
	if !got.Session || !got.Overflow || fmt.Sprint(got.Messages) != fmt.Sprint(want) {
		t.Fatalf("after 4 changes with room for 3: %+v, want session, %v and overflow", got, want)
	}
}

// A Redis that accepts the subscription's connection and never answers
// (Toxiproxy's timeout toxic) must not hold a subscriber past its own
// deadline, nor queue it behind another subscriber that is waiting, nor
// hold a subscriber whose context has no deadline forever (pub/sub reads
// have no ReadTimeout of their own): each gives up, the latter after the
// hub's Probe. The bounds below are on a hang, not on speed: 2 s is below
// the Probe (4 s) that the first subscriber waits, so an answer within it
// shows the second did not queue behind the first; 30 s is what "not
// forever" means here. Once Redis answers again, the hub subscribes.
func TestHubSubscribingToAHungRedisGivesUp(t *testing.T) {
	t.Parallel()
	r := testenv.NewRedisDB(t)
	p := testenv.NewFaultProxy(t, "redis", r.Addr)
	h := events.NewHub(events.NewBus(p.ProxyRedis(r)), events.HubOptions{Probe: 4 * time.Second})
	t.Cleanup(h.Close)
	p.Hang()

	first := make(chan error, 1)
	go func() {
		_, err := h.Stream(context.Background(), alice)
		first <- err
	}()
	time.Sleep(200 * time.Millisecond) // let it start subscribing (either order passes)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := h.Subscribe(ctx, bob); err == nil {
		t.Fatal("subscribed through a hung Redis")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("a subscriber with a 200 ms deadline waited %v on a hung Redis", took.Round(time.Millisecond))
	}
	select {
	case err := <-first:
		if err == nil {
			t.Fatal("streamed through a hung Redis")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a subscriber without a deadline still waits on a hung Redis after 30 s")
	}

	p.Unhang()
	testfactory.EventuallyIn(t, "a subscription once Redis answers", 30*time.Second, func() bool {
		l, err := h.Subscribe(context.Background(), alice)
		if err == nil {
			l.Close()
		}
		return err == nil
	})
}
