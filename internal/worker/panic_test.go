package worker_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	waevents "go.mau.fi/whatsmeow/types/events"

	"wasessions/internal/store"
	"wasessions/internal/worker"
)

// TestPanickingHandlerWithholdsTheReceipt: whatsmeow recovers a handler's
// panic and counts the handler as successful, so a bug that panics while a
// received message is handled would have it receipted and never stored.
// The worker's handler turns the panic into a failure: WhatsApp keeps the
// message, delivers it again (here after the socket drops) and it is
// stored, once.
func TestPanickingHandlerWithholdsTheReceipt(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	var panicked atomic.Bool
	w1 := e.startWorker("w1", workerOpts{setup: func(w *worker.Worker) {
		worker.SetBeforeWAEvent(w, func(evt any) {
			if _, ok := evt.(*waevents.Message); ok && panicked.CompareAndSwap(false, true) {
				panic("test: a bug in the message handler")
			}
		})
	}})
	s := e.link(w1, userA, "+15550009101", "Jo")
	if _, err := e.emu.AddPeer("+15557659101", "Peer"); err != nil {
		t.Fatal(err)
	}
	id, err := e.emu.SendText(ctx, "+15557659101", "+15550009101", "after a panic", "")
	if err != nil {
		t.Fatal(err)
	}
	inbound := func() []store.Message {
		t.Helper()
		ms, _, err := e.st.ListMessages(ctx, userA, store.MessageFilter{Direction: "in", Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		return ms
	}
	deadline := time.Now().Add(waitFor)
	for !panicked.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the message never reached the handler")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second) // a receipt sent despite the panic would be in by now
	if sm, err := e.emu.Message(id); err != nil || len(sm.Devices) != 1 || sm.Devices[0].State == "delivered" {
		t.Fatalf("after the panic WhatsApp holds %+v (%v); want it not delivered to the device", sm, err)
	}
	if _, err := e.emu.Drop(*s.DeviceJID); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(waitFor)
	for len(inbound()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the message was never stored after the socket dropped")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // a second copy would show now
	if ms := inbound(); len(ms) != 1 || ms[0].Text != "after a panic" {
		t.Fatalf("stored %+v, want the text once", ms)
	}
}
