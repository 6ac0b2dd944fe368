package worker_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	waevents "go.mau.fi/whatsmeow/types/events"

	"wasessions/internal/store"
	"wasessions/internal/wa"
	"wasessions/internal/waemu"
	"wasessions/internal/worker"
	"wasessions/tasks"
)

// TestHistorySurvivesAFailedStoreAndAWorkerGone: with HISTORY_SYNC=recent
// the phone shares its chats; the hosting worker cannot store them (every
// insert into messages fails, by a trigger in this test's own database),
// after whatsmeow already told WhatsApp the history arrived, so WhatsApp
// will not send it again; then the worker goes away. Once inserts work,
// the next host stores every text contacts sent, once each, and none of
// the account's own.
func TestHistorySurvivesAFailedStoreAndAWorkerGone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	recent := wa.HostOptions{HistoryRecent: true}

	reached := make(chan struct{})
	var once sync.Once
	watch := func(w *worker.Worker) {
		worker.SetBeforeWAEvent(w, func(evt any) {
			m, isMsg := evt.(*waevents.Message)
			_, isSync := evt.(*waevents.HistorySync)
			if isSync || isMsg && wa.HistoryNotification(m.Message) != nil {
				once.Do(func() { close(reached) })
			}
		})
	}
	sql := func(q string) {
		t.Helper()
		if _, err := e.st.Pool().Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	w1 := e.startWorker("w1", workerOpts{host: recent, setup: watch})
	w2 := e.startWorker("w2", workerOpts{host: recent})
	s := e.link(w1, userA, "+15550009001", "Ivy")

	sql(`CREATE FUNCTION refuse_messages() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN RAISE EXCEPTION 'test: messages refused'; END $$`)
	sql(`CREATE TRIGGER refuse_messages BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse_messages()`)
	for _, p := range []string{"+15557659001", "+15557659002"} {
		if _, err := e.emu.AddPeer(p, "Peer"); err != nil {
			t.Fatal(err)
		}
	}
	notif, _, err := e.emu.SendHistorySync(ctx, "+15550009001", []waemu.HistoryChat{
		{With: "+15557659001", Messages: []waemu.HistoryText{{Text: "jay 1"}, {Text: "mine", FromMe: true}, {Text: "jay 2"}}},
		{With: "+15557659002", Messages: []waemu.HistoryText{{Text: "kim 1"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-reached:
	case <-time.After(30 * time.Second):
		t.Fatal("the history never reached the worker")
	}
	// WhatsApp counts it as received by the device: it will not come again.
	deadline := time.Now().Add(10 * time.Second)
	for {
		sm, err := e.emu.Message(notif)
		if err == nil && len(sm.Devices) == 1 && sm.Devices[0].State == "delivered" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the notification was never receipted: %+v %v", sm, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	inbound := func() []string {
		t.Helper()
		ms, _, err := e.st.ListMessages(ctx, userA, store.MessageFilter{Direction: "in", Limit: 50})
		if err != nil {
			t.Fatal(err)
		}
		var texts []string
		for _, m := range ms {
			texts = append(texts, m.Chat+" "+m.Text)
		}
		sort.Strings(texts)
		return texts
	}
	// w1 goes; stop waits for the handler, which failed.
	w1.stop()
	if got := inbound(); len(got) != 0 {
		t.Fatalf("stored while inserts failed: %v", got)
	}
	sql(`DROP TRIGGER refuse_messages ON messages`)
	j, _ := tasks.NewRestore(s.SessionID, 0, "test")
	if err := w2.process(t, j); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.SessionID, "connected on w2", func(s store.Session) bool {
		return s.Status == store.StatusConnected && store.Str(s.WorkerID) == "w2"
	})
	want := "[+15557659001 jay 1 +15557659001 jay 2 +15557659002 kim 1]"
	deadline = time.Now().Add(20 * time.Second)
	for {
		got := inbound()
		if fmt.Sprint(got) == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored after the restore: %v, want %s", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // a second store would show now
	if got := fmt.Sprint(inbound()); got != want {
		t.Fatalf("stored %s, want %s once each", got, want)
	}
}
