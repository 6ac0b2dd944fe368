package redisconn_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"wasessions/internal/events"
	"wasessions/internal/logging"
	"wasessions/internal/queue"
	"wasessions/internal/ratelimit"
	"wasessions/internal/redisconn"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
	"wasessions/tasks"
)

// Redis through Sentinel (a primary, a replica, three sentinels): asynq
// (enqueues, and a server taking tasks), the event hub's one subscription
// and the rate limits all run on the one client redisconn builds from the
// Sentinel settings. The primary is SIGKILLed while tasks and events keep
// coming; once the sentinels promote the replica, all three carry on on it
// with the same client, nothing a user did before the kill (and was
// replicated) is forgotten, and nothing acknowledged after it is lost.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	g := testenv.StartSentinelGroup(t)
	conn, err := redisconn.New(g.Settings(2))
	if err != nil {
		t.Fatal(err)
	}
	rdb := conn.Client()
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The asynq server: which session:create tasks ran, and how often.
	var mu sync.Mutex
	ran := map[string]time.Time{}
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeSessionCreate, func(_ context.Context, task *asynq.Task) error {
		p, err := tasks.ParseSession(task)
		if err != nil {
			return err
		}
		mu.Lock()
		if _, ok := ran[p.SessionID]; !ok {
			ran[p.SessionID] = time.Now()
		}
		mu.Unlock()
		return nil
	})
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: 4, Queues: map[string]int{tasks.QueueShared: 1},
		TaskCheckInterval: 100 * time.Millisecond,
		Logger:            logging.Asynq(slog.New(slog.DiscardHandler)),
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	ranAt := func(id string) (time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		at, ok := ran[id]
		return at, ok
	}
	enq := queue.New(rdb)
	enqueue := func(id string) error {
		j, err := tasks.NewCreate(id, 0, "test")
		if err != nil {
			t.Fatal(err)
		}
		_, err = enq.Enqueue(ctx, j, false)
		return err
	}

	bus := events.NewBus(rdb)
	hub := events.NewHub(bus, events.HubOptions{Probe: time.Second})
	defer hub.Close()
	const user = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
	heard := func(l *events.Listener, within time.Duration) bool {
		err := bus.Publish(ctx, events.Event{Type: events.TypeStatus, SessionID: "s", UserID: user, Status: "connected"})
		if err != nil {
			return false
		}
		select {
		case _, ok := <-l.C:
			return ok
		case <-time.After(within):
			return false
		}
	}

	limiter := ratelimit.New(rdb)
	lim := ratelimit.Limit{N: 5, Per: time.Hour}
	allow := func() (bool, error) {
		d, err := limiter.Allow(ctx, "create", user, lim)
		return d.Allowed, err
	}

	// Before the kill: everything works, 3 of the 5 allowed creates are
	// used, and the replica has seen all of it.
	for i := range 10 {
		if err := enqueue(fmt.Sprintf("before-%d", i)); err != nil {
			t.Fatalf("enqueue before the kill: %v", err)
		}
	}
	l, err := hub.Stream(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if !heard(l, 5*time.Second) {
		t.Fatal("no event through the hub before the kill")
	}
	for range 3 {
		if ok, err := allow(); err != nil || !ok {
			t.Fatalf("rate limit before the kill: allowed %v, %v", ok, err)
		}
	}
	testfactory.EventuallyIn(t, "the 10 tasks to run", 10*time.Second, func() bool {
		for i := range 10 {
			if _, ok := ranAt(fmt.Sprintf("before-%d", i)); !ok {
				return false
			}
		}
		return true
	})
	if n, err := rdb.Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT for the replica: %d replicas, %v", n, err)
	}

	// Load: a task every 20 ms, from before the kill until well after the
	// failover.
	type ack struct {
		id         string
		sent, done time.Time
	}
	var (
		lmu     sync.Mutex // guards acks and failed
		acks    []ack
		failed  int
		stop    = make(chan struct{})
		stopped = make(chan struct{})
	)
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			id := fmt.Sprintf("load-%d", i)
			sent := time.Now()
			err := enqueue(id)
			lmu.Lock()
			if err != nil {
				failed++
			} else {
				acks = append(acks, ack{id, sent, time.Now()})
			}
			lmu.Unlock()
		}
	}()
	time.Sleep(300 * time.Millisecond)

	old := g.KillPrimary()
	killed := time.Now()
	// The hub notices: every stream ends, so its client reconnects and
	// reads the current state afresh instead of missing events.
	select {
	case _, ok := <-l.C:
		if ok {
			// A last event delivered before the loss; the close follows.
			select {
			case <-l.C:
			case <-time.After(20 * time.Second):
				t.Fatal("the stream did not end after the primary died")
			}
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the stream did not end after the primary died")
	}
	now := g.WaitFailover(old, 30*time.Second)
	promoted := time.Since(killed)

	// The same client carries on against the new primary: a stream hears
	// events again, the counted creates are still counted, and the load's
	// tasks run again.
	var l2 *events.Listener
	testfactory.EventuallyIn(t, "an event stream through the promoted replica", 20*time.Second, func() bool {
		if l2 == nil {
			if l2, err = hub.Stream(ctx, user); err != nil {
				l2 = nil
				return false
			}
		}
		if heard(l2, 500*time.Millisecond) {
			return true
		}
		l2.Close()
		l2 = nil
		return false
	})
	eventsBack := time.Since(killed)
	l2.Close()
	for i := range 2 {
		if ok, err := allow(); err != nil || !ok {
			t.Fatalf("rate limit after the failover, create %d of the 2 left: allowed %v, %v", 4+i, ok, err)
		}
	}
	if ok, err := allow(); err != nil || ok {
		t.Fatalf("rate limit after the failover: a 6th create of 5/1h allowed %v (%v): the count was lost", ok, err)
	}

	testfactory.EventuallyIn(t, "a task enqueued after the kill to run", 20*time.Second, func() bool {
		lmu.Lock()
		defer lmu.Unlock()
		for _, a := range acks {
			if a.sent.After(killed) {
				_, ok := ranAt(a.id)
				return ok
			}
		}
		return false
	})
	close(stop)
	<-stopped

	// Every task acknowledged after the kill was written only to the new
	// primary: all of them run. Tasks acknowledged just before the kill
	// may be lost with an unreplicated tail (the reconciler's part, not
	// this package's); count them.
	var after, lostBefore int
	var queuesBack time.Duration
	for _, a := range acks {
		_, ok := ranAt(a.id)
		if a.sent.After(killed) {
			after++
			if queuesBack == 0 {
				queuesBack = a.done.Sub(killed)
			}
			if !ok {
				testfactory.EventuallyIn(t, "task "+a.id+" (acknowledged after the kill) to run", 10*time.Second, func() bool {
					_, ok := ranAt(a.id)
					return ok
				})
			}
		} else if !ok {
			lostBefore++
		}
	}
	if after == 0 {
		t.Fatal("no enqueue succeeded after the kill")
	}
	t.Logf("FIGURE sentinel failover (down-after %s): promoted %s after the SIGKILL (now %s); enqueues succeed again after %s, events after %s; %d enqueues failed meanwhile, %d acknowledged after the kill all ran, %d acknowledged before it were lost",
		testenv.SentinelDownAfter, promoted.Round(time.Millisecond), now, queuesBack.Round(time.Millisecond),
		eventsBack.Round(time.Millisecond), failed, after, lostBefore)
}
