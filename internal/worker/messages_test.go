package worker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"wasessions/internal/events"
	"wasessions/internal/store"
	"wasessions/internal/testfactory"
	"wasessions/internal/waemu"
	"wasessions/internal/worker"
	"wasessions/tasks"
)

// A message WhatsApp acked while Postgres is unreachable is recorded as
// sent when Postgres is back, and never sent again. Before, recording the
// ack was given up after six tries (about 6 s of a refusing Postgres), the
// message stayed at the head of the outbox, and the sender sent it again
// as soon as Postgres answered: the recipient got it twice.
func TestAckedMessageIsRecordedAfterAPostgresOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	proxied, pg := e.proxiedStore(4)
	acked := make(chan struct{})
	var once sync.Once
	// A 30 s lease: the heartbeat goes through the same proxy, and the
	// outage must not end the hosting.
	w1 := e.startWorker("w1", workerOpts{pool: proxied, waPool: e.st, leaseTTL: 30 * time.Second,
		setup: func(w *worker.Worker) {
			worker.SetSendAcked(w, func(string, string) {
				once.Do(func() {
					pg.Down()
					close(acked)
				})
			})
		}})
	s := e.link(w1, userA, "", "")
	bob, err := e.emu.AddPeer("+15550007001", "Bob")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m := sendText(t, e, w1, s, bob.Phone, "hello once")
	select {
	case <-acked:
	case <-time.After(waitFor):
		t.Fatal("the message was never acked by WhatsApp")
	}
	time.Sleep(9 * time.Second) // the outage outlasts the old budget (~6 s)
	pg.Up()

	var got store.Message
	testfactory.EventuallyIn(t, "the message recorded as sent", waitFor, func() bool {
		got, err = e.st.GetMessage(ctx, userA, m.ID)
		return err == nil && got.SentAt != nil
	})
	inbox, err := e.emu.Inbox(bob.JID)
	if err != nil {
		t.Fatal(err)
	}
	if len(inbox) != 1 || inbox[0].ID != m.WAMessageID || inbox[0].Count != 1 {
		t.Fatalf("Bob's inbox %+v: want message %s once (count 1)", inbox, m.WAMessageID)
	}
	if got.Attempts != 1 {
		t.Errorf("message %s: %d attempts, want 1 (it was sent again)", m.ID, got.Attempts)
	}
}

// A message's status events reach the stream in the order Postgres
// recorded the statuses. The sender records WhatsApp's ack (sent) and
// whatsmeow's goroutine the recipient's receipt (delivered); the one that
// committed first could publish second, and the stream showed delivered
// before sent (an e2e run of TestMessagesSendAndReceive did). Here the
// sender is held between its write and its publish until the delivered
// event shows (or 5 s pass).
func TestMessageStatusEventsInRecordedOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	sawDelivered := make(chan struct{})
	var once sync.Once
	w1 := e.startWorker("w1", workerOpts{setup: func(w *worker.Worker) {
		worker.SetSentRecorded(w, func(string, string) {
			select {
			case <-sawDelivered:
			case <-time.After(5 * time.Second):
			}
		})
	}})
	sub, err := e.bus.Subscribe(ctx, userA)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	s := e.link(w1, userA, "", "")
	bob, err := e.emu.AddPeer("+15550007101", "Bob")
	if err != nil {
		t.Fatal(err)
	}
	// The phones' receipts (Bob's delivered, the account's own phone's
	// copy) come a second after WhatsApp's ack, while the sender is held:
	// otherwise they often overtake the ack (a history without the ack's
	// write, which is fine, but not this test's case).
	if _, err := e.emu.SetFault(waemu.Fault{Kind: waemu.FaultDelayReceipts, Seconds: 1}); err != nil {
		t.Fatal(err)
	}
	m := sendText(t, e, w1, s, bob.Phone, "in order")
	var order []string
	timeout := time.After(waitFor)
	for len(order) < 2 {
		select {
		case ev := <-sub.C:
			if ev.Type != events.TypeMessageStatus || ev.MessageID != m.ID {
				continue
			}
			order = append(order, ev.Status)
			if ev.Status == store.MessageDelivered {
				once.Do(func() { close(sawDelivered) })
			}
		case <-timeout:
			t.Fatalf("status events of the message: %v, want sent then delivered", order)
		}
	}
	if order[0] != store.MessageSent || order[1] != store.MessageDelivered {
		t.Fatalf("status events of the message: %v, want [sent delivered], the order Postgres recorded", order)
	}
	// The receipts' acks are written after their handling; the worker's
	// stop at the test's end must not disconnect while one is (whatsmeow's
	// frame socket races with Disconnect: waemu.Server.Barrier). The own
	// phone's receipt came with Bob's, before the barrier.
	if err := e.emu.Barrier(ctx, *s.DeviceJID); err != nil {
		t.Fatal(err)
	}
}

// sendText queues text from userA's session s to the phone number to and
// runs its send task on w.
func sendText(t *testing.T, e *env, w *testWorker, s store.Session, to, text string) store.Message {
	t.Helper()
	m, _, err := e.st.QueueOutbound(context.Background(), store.NewOutbound{UserID: userA, To: to, Text: text})
	if err != nil {
		t.Fatal(err)
	}
	own, err := tasks.WorkerQueue(w.id)
	if err != nil {
		t.Fatal(err)
	}
	j, err := tasks.NewSend(s.SessionID, m.ID, own)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.process(t, j); err != nil {
		t.Fatal(err)
	}
	return m
}
