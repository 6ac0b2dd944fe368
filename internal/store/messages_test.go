package store_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"wasessions/internal/store"
)

func (f *fx) queue(userID, to, text, key string) store.Message {
	f.t.Helper()
	m, _, err := f.st.QueueOutbound(f.ctx, store.NewOutbound{UserID: userID, To: to, Text: text, IdempotencyKey: key})
	if err != nil {
		f.t.Fatalf("queue outbound: %v", err)
	}
	return m
}

func TestQueueOutboundNeedsALinkedSession(t *testing.T) {
	f := newFx(t)
	pending := f.create()
	cases := []struct {
		name   string
		userID string
	}{
		{"no session at all", uuid.NewString()},
		{"session still pairing", pending.UserID},
		{"session ended", f.ended(store.StatusLoggedOut, true).UserID},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := f.st.QueueOutbound(f.ctx, store.NewOutbound{UserID: c.userID, To: "+15557654321", Text: "hi"})
			if !errors.Is(err, store.ErrNotLinked) {
				t.Fatalf("err = %v, want ErrNotLinked", err)
			}
		})
	}
	// Reconnecting (handed over, restoring) still accepts: the message waits.
	s, _ := f.hosted("w1", store.StatusReconnecting)
	m := f.queue(s.UserID, "+15557654321", "hi", "")
	if m.Status != store.MessageQueued || m.SessionID != s.SessionID || len(m.WAMessageID) != 22 {
		t.Fatalf("queued message = %+v", m)
	}
}

func TestQueueOutboundIdempotencyKeyUnderConcurrency(t *testing.T) {
	f := newFx(t)
	s, _ := f.hosted("w1", store.StatusConnected)
	const n = 20
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		ids     = map[string]int{}
		created int
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, c, err := f.st.QueueOutbound(f.ctx, store.NewOutbound{UserID: s.UserID, To: "+15557654321", Text: "once", IdempotencyKey: "k-1"})
			if err != nil {
				t.Errorf("queue: %v", err)
				return
			}
			mu.Lock()
			ids[m.ID]++
			if c {
				created++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(ids) != 1 || created != 1 {
		t.Fatalf("%d concurrent queues with one key: %d messages, %d created; want 1 and 1", n, len(ids), created)
	}
	var rows int
	if err := f.st.Pool().QueryRow(f.ctx, `SELECT count(*) FROM messages WHERE user_id = $1`, s.UserID).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("rows = %d (%v), want 1", rows, err)
	}

	// Same key, other text: refused. Another user may use the same key.
	if _, _, err := f.st.QueueOutbound(f.ctx, store.NewOutbound{UserID: s.UserID, To: "+15557654321", Text: "other", IdempotencyKey: "k-1"}); !errors.Is(err, store.ErrIdempotencyMismatch) {
		t.Fatalf("reused key, other text: err = %v", err)
	}
	other, _ := f.hosted("w1", store.StatusConnected)
	if _, c, err := f.st.QueueOutbound(f.ctx, store.NewOutbound{UserID: other.UserID, To: "+15557654321", Text: "once", IdempotencyKey: "k-1"}); err != nil || !c {
		t.Fatalf("other user's same key: created %v, %v", c, err)
	}

	// After 24 h the key is free again.
	f.exec(`UPDATE messages SET created_at = now() - interval '25 hours' WHERE user_id = $1`, s.UserID)
	if _, c, err := f.st.QueueOutbound(f.ctx, store.NewOutbound{UserID: s.UserID, To: "+15557654321", Text: "again", IdempotencyKey: "k-1"}); err != nil || !c {
		t.Fatalf("key older than 24h: created %v, %v", c, err)
	}
}

func TestNextOutboundOrderFencingAndStatuses(t *testing.T) {
	f := newFx(t)
	s, fence := f.hosted("w1", store.StatusConnected)
	var want []string
	for i := range 3 {
		want = append(want, f.queue(s.UserID, "+15557654321", fmt.Sprint("m", i), "").ID)
	}
	off := store.Pacing{}
	for i, id := range want {
		m, wait, _, err := f.st.NextOutbound(f.ctx, fence, off, time.Hour)
		if err != nil || wait != 0 || m.ID != id {
			t.Fatalf("next #%d = %s wait %s err %v; want %s", i, m.ID, wait, err, id)
		}
		// Until it is acked it stays the head: a retry sends it again.
		again, _, _, _ := f.st.NextOutbound(f.ctx, fence, off, time.Hour)
		if again.ID != id || again.WAMessageID != m.WAMessageID || again.Attempts != 2 {
			t.Fatalf("retry of #%d = %+v", i, again)
		}
		if _, changed, err := f.st.MarkSent(f.ctx, id); err != nil || !changed {
			t.Fatalf("mark sent: %v %v", changed, err)
		}
	}
	if _, _, _, err := f.st.NextOutbound(f.ctx, fence, off, time.Hour); !errors.Is(err, store.ErrOutboxEmpty) {
		t.Fatalf("empty outbox: err = %v", err)
	}

	// Another worker takes the session over: the old fence sends nothing.
	f.queue(s.UserID, "+15557654321", "after handoff", "")
	f.lapseLease(s.SessionID)
	newFence := f.claim(s.SessionID, "w2", store.ClaimToHost)
	if _, _, _, err := f.st.NextOutbound(f.ctx, fence, off, time.Hour); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("old owner: err = %v, want ErrFenced", err)
	}
	m, _, _, err := f.st.NextOutbound(f.ctx, newFence, off, time.Hour)
	if err != nil || m.Text != "after handoff" {
		t.Fatalf("new owner: %+v %v", m, err)
	}

	// Receipts move forward only; a delivery receipt overtaking the ack keeps delivered.
	got, err := f.st.ApplyReceipt(f.ctx, s.SessionID, []string{m.WAMessageID}, false)
	if err != nil || len(got) != 1 || got[0].Status != store.MessageDelivered {
		t.Fatalf("delivery receipt: %+v %v", got, err)
	}
	if m2, changed, err := f.st.MarkSent(f.ctx, m.ID); err != nil || changed || m2.Status != store.MessageDelivered || m2.SentAt == nil {
		t.Fatalf("late ack: %+v changed %v %v", m2, changed, err)
	}
	if got, _ := f.st.ApplyReceipt(f.ctx, s.SessionID, []string{m.WAMessageID}, true); len(got) != 1 || got[0].Status != store.MessageRead {
		t.Fatalf("read receipt: %+v", got)
	}
	if got, _ := f.st.ApplyReceipt(f.ctx, s.SessionID, []string{m.WAMessageID}, false); len(got) != 0 {
		t.Fatalf("delivery after read moved it back: %+v", got)
	}
	hist, err := f.st.MessageHistory(f.ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, h := range hist {
		seen = append(seen, h.Status)
	}
	if fmt.Sprint(seen) != "[queued delivered read]" {
		t.Fatalf("history = %v", seen)
	}
}

// TestMarkAccepted: the account's own phone's receipt makes a queued
// message sent (it leaves the outbox: no resend) and changes nothing else.
func TestMarkAccepted(t *testing.T) {
	f := newFx(t)
	s, fence := f.hosted("w1", store.StatusConnected)
	held := f.queue(s.UserID, "+15557654321", "ack lost", "")
	next := f.queue(s.UserID, "+15557654321", "next", "")
	if m, _, _, err := f.st.NextOutbound(f.ctx, fence, store.Pacing{}, time.Hour); err != nil || m.ID != held.ID {
		t.Fatalf("head: %+v %v", m, err)
	}
	got, err := f.st.MarkAccepted(f.ctx, s.SessionID, []string{held.WAMessageID, "3EB0UNKNOWN"})
	if err != nil || len(got) != 1 || got[0].ID != held.ID || got[0].Status != store.MessageSent || got[0].SentAt == nil {
		t.Fatalf("mark accepted: %+v %v", got, err)
	}
	if m, _, _, err := f.st.NextOutbound(f.ctx, fence, store.Pacing{}, time.Hour); err != nil || m.ID != next.ID {
		t.Fatalf("head after: %+v %v, want the next message", m, err)
	}
	// Delivered already, or another session's id: nothing moves.
	if _, err := f.st.ApplyReceipt(f.ctx, s.SessionID, []string{held.WAMessageID}, false); err != nil {
		t.Fatal(err)
	}
	if got, err := f.st.MarkAccepted(f.ctx, s.SessionID, []string{held.WAMessageID}); err != nil || len(got) != 0 {
		t.Fatalf("after delivered: %+v %v", got, err)
	}
	if got, err := f.st.MarkAccepted(f.ctx, uuid.NewString(), []string{next.WAMessageID}); err != nil || len(got) != 0 {
		t.Fatalf("another session: %+v %v", got, err)
	}
}

func TestNextOutboundPacingHoldsAcrossHandoff(t *testing.T) {
	f := newFx(t)
	s, fence := f.hosted("w1", store.StatusConnected)
	for i := range 4 {
		f.queue(s.UserID, "+15557654321", fmt.Sprint("m", i), "")
	}
	p := store.Pacing{PerMinute: 60, Burst: 2} // one a second after a burst of two
	for i := range 2 {
		m, wait, _, err := f.st.NextOutbound(f.ctx, fence, p, time.Hour)
		if err != nil || wait != 0 || m.ID == "" {
			t.Fatalf("burst send #%d: wait %s err %v", i, wait, err)
		}
		f.st.MarkSent(f.ctx, m.ID)
	}
	_, wait, _, err := f.st.NextOutbound(f.ctx, fence, p, time.Hour)
	if err != nil || wait <= 0 {
		t.Fatalf("third send right after the burst: wait %s err %v; want a wait", wait, err)
	}
	// The session moves to another worker: the bucket moves with it.
	f.lapseLease(s.SessionID)
	newFence := f.claim(s.SessionID, "w2", store.ClaimToHost)
	m, wait, _, err := f.st.NextOutbound(f.ctx, newFence, p, time.Hour)
	if err != nil || wait <= 0 || m.ID == "" || m.Attempts != 0 {
		t.Fatalf("after handoff: message %q (attempts %d) wait %s err %v; want the same bucket, empty", m.ID, m.Attempts, wait, err)
	}
	time.Sleep(wait + 50*time.Millisecond)
	m, wait, _, err = f.st.NextOutbound(f.ctx, newFence, p, time.Hour)
	if err != nil || wait != 0 || m.ID == "" || m.Attempts != 1 {
		t.Fatalf("after the wait: message %q wait %s err %v", m.ID, wait, err)
	}
}

func TestExpiryAndStrandedMessages(t *testing.T) {
	f := newFx(t)
	hosted, fence := f.hosted("w1", store.StatusConnected)
	old := f.queue(hosted.UserID, "+15557654321", "old", "")
	fresh := f.queue(hosted.UserID, "+15557654321", "fresh", "")
	f.exec(`UPDATE messages SET created_at = now() - interval '2 hours' WHERE id = $1`, old.ID)

	// A hosted session's sender expires its own, never the stranded sweep.
	if got, err := f.st.FailStranded(f.ctx, time.Hour, 100); err != nil || len(got) != 0 {
		t.Fatalf("sweep touched a hosted session's messages: %+v %v", got, err)
	}
	m, _, expired, err := f.st.NextOutbound(f.ctx, fence, store.Pacing{}, time.Hour)
	if err != nil || m.ID != fresh.ID || len(expired) != 1 || expired[0].ID != old.ID || store.Str(expired[0].StatusReason) != store.ReasonExpired {
		t.Fatalf("next = %s, expired %+v, %v", m.ID, expired, err)
	}

	// The last one expiring leaves the outbox empty, and stays expired.
	f.exec(`UPDATE messages SET created_at = now() - interval '2 hours' WHERE id = $1`, fresh.ID)
	if _, _, expired, err := f.st.NextOutbound(f.ctx, fence, store.Pacing{}, time.Hour); !errors.Is(err, store.ErrOutboxEmpty) || len(expired) != 1 {
		t.Fatalf("only an expired message left: %d expired, err %v", len(expired), err)
	}
	if m, _ := f.st.GetMessage(f.ctx, hosted.UserID, fresh.ID); m.Status != store.MessageFailed || store.Str(m.StatusReason) != store.ReasonExpired {
		t.Fatalf("expired message is %s/%s after the take, want failed/expired", m.Status, store.Str(m.StatusReason))
	}

	// Unhosted: the sweep expires old ones and keeps young ones waiting.
	waiting := f.unhosted(store.StatusReconnecting)
	young := f.queue(waiting.UserID, "+15557654321", "young", "")
	stale := f.queue(waiting.UserID, "+15557654321", "stale", "")
	f.exec(`UPDATE messages SET created_at = now() - interval '2 hours' WHERE id = $1`, stale.ID)

	// Ended (unlinked): every queued message fails as session_ended.
	gone, gfence := f.hosted("w1", store.StatusConnected)
	doomed := f.queue(gone.UserID, "+15557654321", "doomed", "")
	if _, err := f.st.End(f.ctx, gfence, store.Ending{Reason: store.ReasonPhoneUnlinked, KeysDeleted: true}); err != nil {
		t.Fatal(err)
	}
	got, err := f.st.FailStranded(f.ctx, time.Hour, 100)
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	for _, m := range got {
		reasons[m.ID] = store.Str(m.StatusReason)
	}
	want := map[string]string{stale.ID: store.ReasonExpired, doomed.ID: store.ReasonSessionEnded}
	if fmt.Sprint(reasons) != fmt.Sprint(want) {
		t.Fatalf("stranded = %v, want %v", reasons, want)
	}
	if m, _ := f.st.GetMessage(f.ctx, waiting.UserID, young.ID); m.Status != store.MessageQueued {
		t.Fatalf("young message of an unhosted session: %s, want queued", m.Status)
	}
}

func TestSaveInboundOnceAndRetention(t *testing.T) {
	f := newFx(t)
	s, fence := f.hosted("w1", store.StatusConnected)
	in := store.Inbound{SessionID: s.SessionID, UserID: s.UserID, Chat: "+15557654321", Text: "hello", WAMessageID: "ABC1", Timestamp: time.Now()}
	var createdCount int
	for range 3 {
		_, created, err := f.st.SaveInbound(f.ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		if created {
			createdCount++
		}
	}
	if createdCount != 1 {
		t.Fatalf("three deliveries of one id created %d rows", createdCount)
	}
	list, more, err := f.st.ListMessages(f.ctx, s.UserID, store.MessageFilter{Direction: store.DirectionIn, Limit: 10})
	if err != nil || len(list) != 1 || more || list[0].Status != store.MessageReceived {
		t.Fatalf("list = %+v more %v %v", list, more, err)
	}
	// Another user sees nothing of it.
	if _, err := f.st.GetMessage(f.ctx, uuid.NewString(), list[0].ID); !errors.Is(err, store.ErrMessageNotFound) {
		t.Fatalf("other user's get: %v", err)
	}

	// Live session: kept whatever its age.
	if n, err := f.st.DeleteOldMessages(f.ctx, time.Hour, 2); err != nil || n != 0 {
		t.Fatalf("retention on a live session deleted %d (%v)", n, err)
	}
	for i := range 4 {
		in.WAMessageID = fmt.Sprint("X", i)
		f.st.SaveInbound(f.ctx, in)
	}
	if _, err := f.st.End(f.ctx, fence, store.Ending{Reason: store.ReasonUserDisconnected, KeysDeleted: true}); err != nil {
		t.Fatal(err)
	}
	if n, _ := f.st.DeleteOldMessages(f.ctx, time.Hour, 2); n != 0 {
		t.Fatalf("deleted %d right after the end; want 0 within retention", n)
	}
	f.exec(`UPDATE message_sessions SET ended_at = now() - interval '2 hours' WHERE session_id = $1`, s.SessionID)
	if n, err := f.st.DeleteOldMessages(f.ctx, time.Hour, 2); err != nil || n != 5 {
		t.Fatalf("retention past: deleted %d (%v), want 5 in batches of 2", n, err)
	}
}

func TestListMessagesPages(t *testing.T) {
	f := newFx(t)
	s, _ := f.hosted("w1", store.StatusConnected)
	for i := range 5 {
		to := "+15550000001"
		if i%2 == 1 {
			to = "+15550000002"
		}
		f.queue(s.UserID, to, fmt.Sprint("m", i), "")
	}
	var texts []string
	var before int64
	for {
		page, more, err := f.st.ListMessages(f.ctx, s.UserID, store.MessageFilter{Chat: "+15550000001", BeforeSeq: before, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page {
			texts = append(texts, m.Text)
		}
		if !more {
			break
		}
		before = page[len(page)-1].Seq
	}
	if fmt.Sprint(texts) != "[m4 m2 m0]" {
		t.Fatalf("pages = %v, want newest first for one chat", texts)
	}
}
