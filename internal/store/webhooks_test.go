package store_test

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"wasessions/internal/store"
	"wasessions/internal/testfactory"
)

func TestWebhookVocabularyMatchesSchema(t *testing.T) {
	b, err := os.ReadFile("../../migrations/00019_webhooks.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		column string
		want   []string
	}{
		{"type", store.WebhookEventTypes()},
		{"scope", []string{store.WebhookScopeUser, store.WebhookScopeAll}},
		{"disabled_reason", []string{store.WebhookDisabledGone, store.WebhookDisabledFailing}},
	} {
		m := regexp.MustCompile(`CHECK \(` + tc.column + ` IN \(([^)]*)\)\)`).FindSubmatch(b)
		if m == nil {
			t.Fatalf("no CHECK constraint on %s", tc.column)
		}
		var inSQL []string
		for _, v := range strings.Split(string(m[1]), ",") {
			inSQL = append(inSQL, strings.Trim(strings.TrimSpace(v), "'"))
		}
		if !slices.Equal(slices.Sorted(slices.Values(inSQL)), slices.Sorted(slices.Values(tc.want))) {
			t.Errorf("%s: the migration allows %v, the code has %v", tc.column, inSQL, tc.want)
		}
	}
}

func (f *fx) endpoint(userID, scope string, events ...string) store.WebhookEndpoint {
	f.t.Helper()
	e, err := f.st.CreateWebhookEndpoint(f.ctx, store.NewWebhookEndpoint{UserID: userID, Scope: scope,
		URL: "https://hooks.example.com/" + uuid.NewString(), Events: events, Secret: "whsec_dGVzdA=="}, 10)
	if err != nil {
		f.t.Fatal(err)
	}
	return e
}

func (f *fx) deliveries(endpointID string) []int64 {
	f.t.Helper()
	rows, err := f.st.Pool().Query(f.ctx, `SELECT sequence FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY sequence`, endpointID)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			f.t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// The triggers write an event for every status change and inbound
// message, in the same transaction, numbered per session, and a delivery
// for each enabled endpoint that may see it and asked for its type.
func TestWebhookOutboxTriggers(t *testing.T) {
	f := newFx(t)
	user := uuid.NewString()
	mine := f.endpoint(user, store.WebhookScopeUser, store.WebhookEventTypes()...)
	statusOnly := f.endpoint(user, store.WebhookScopeUser, store.EventSessionStatus)
	admin := f.endpoint(uuid.NewString(), store.WebhookScopeAll, store.WebhookEventTypes()...)
	other := f.endpoint(uuid.NewString(), store.WebhookScopeUser, store.WebhookEventTypes()...)
	off := f.endpoint(user, store.WebhookScopeUser, store.WebhookEventTypes()...)
	no := false
	if _, err := f.st.UpdateWebhookEndpoint(f.ctx, user, off.ID, store.WebhookPatch{Enabled: &no}); err != nil {
		t.Fatal(err)
	}

	s := f.createFor(user)                                                                                             // 1: session.status pending
	f.exec(`UPDATE whatsapp_sessions SET status = 'qr', status_reason = 'qr_code' WHERE session_id = $1`, s.SessionID) // 2
	f.exec(`UPDATE whatsapp_sessions SET qr_code = 'x' WHERE session_id = $1`, s.SessionID)                            // no event
	if _, _, err := f.st.SaveInbound(f.ctx, store.Inbound{SessionID: s.SessionID, UserID: user, Chat: "+1555", Text: "hi",
		WAMessageID: "3EB0AAAA", Timestamp: time.Now()}); err != nil { // 3: message.received
		t.Fatal(err)
	}
	// A rolled back change leaves no event.
	tx, err := f.st.Pool().Begin(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(f.ctx, `UPDATE whatsapp_sessions SET status = 'connected' WHERE session_id = $1`, s.SessionID); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(f.ctx); err != nil {
		t.Fatal(err)
	}

	var types []string
	rows, err := f.st.Pool().Query(f.ctx, `SELECT type FROM webhook_events WHERE session_id = $1 ORDER BY sequence`, s.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var typ string
		_ = rows.Scan(&typ)
		types = append(types, typ)
	}
	rows.Close()
	if want := []string{"session.status", "session.status", "message.received"}; !slices.Equal(types, want) {
		t.Fatalf("events %v, want %v", types, want)
	}
	for _, tc := range []struct {
		name string
		ep   store.WebhookEndpoint
		want []int64
	}{
		{"own", mine, []int64{1, 2, 3}},
		{"status only", statusOnly, []int64{1, 2}},
		{"admin all", admin, []int64{1, 2, 3}},
		{"other user", other, nil},
		{"turned off", off, nil},
	} {
		if got := f.deliveries(tc.ep.ID); !slices.Equal(got, tc.want) {
			t.Errorf("%s endpoint: deliveries %v, want %v", tc.name, got, tc.want)
		}
	}

	// Only the head of a session's deliveries is due, and claimable.
	due, err := f.st.DueWebhooks(f.ctx, 8, 100)
	if err != nil {
		t.Fatal(err)
	}
	var mineDue []store.DueWebhook
	for _, d := range due {
		if d.EndpointID == mine.ID {
			mineDue = append(mineDue, d)
		}
	}
	if len(mineDue) != 1 {
		t.Fatalf("due for one endpoint and session: %+v", mineDue)
	}
	var second string
	if err := f.st.Pool().QueryRow(f.ctx, `SELECT event_id::text FROM webhook_deliveries WHERE endpoint_id = $1 AND sequence = 2`, mine.ID).Scan(&second); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.ClaimWebhook(f.ctx, mine.ID, second, 0, time.Minute, 8); !errors.Is(err, store.ErrWebhookNotDue) {
		t.Fatalf("claim of a non-head: %v", err)
	}
	c, err := f.st.ClaimWebhook(f.ctx, mine.ID, mineDue[0].EventID, 0, time.Minute, 8)
	if err != nil || c.Attempt != 1 || c.Event.Sequence != 1 {
		t.Fatalf("claim of the head: %+v %v", c, err)
	}
	if _, err := f.st.ClaimWebhook(f.ctx, mine.ID, mineDue[0].EventID, 0, time.Minute, 8); !errors.Is(err, store.ErrWebhookNotDue) {
		t.Fatalf("second claim of the same attempt: %v", err)
	}
}

// The per-user cap holds.
func TestWebhookEndpointCap(t *testing.T) {
	f := newFx(t)
	user := uuid.NewString()
	for i := range 3 {
		if _, err := f.st.CreateWebhookEndpoint(f.ctx, store.NewWebhookEndpoint{UserID: user, Scope: "user",
			URL: "https://h.example.com/", Events: []string{"session.status"}, Secret: "s"}, 3); err != nil {
			t.Fatalf("endpoint %d: %v", i, err)
		}
	}
	if _, err := f.st.CreateWebhookEndpoint(f.ctx, store.NewWebhookEndpoint{UserID: user, Scope: "user",
		URL: "https://h.example.com/", Events: []string{"session.status"}, Secret: "s"}, 3); !errors.Is(err, store.ErrWebhookLimit) {
		t.Fatalf("fourth endpoint: %v", err)
	}
}

// Old events go once no endpoint waits for them; a pending one stays.
func TestDeleteOldWebhookEvents(t *testing.T) {
	f := newFx(t)
	user := uuid.NewString()
	ep := f.endpoint(user, store.WebhookScopeUser, store.EventSessionStatus)
	s := f.createFor(user)                                                                                             // pending delivery
	f.exec(`UPDATE whatsapp_sessions SET status = 'qr', status_reason = 'qr_code' WHERE session_id = $1`, s.SessionID) // second
	f.exec(`UPDATE webhook_deliveries SET status = 'delivered' WHERE endpoint_id = $1 AND sequence = 2`, ep.ID)
	f.exec(`UPDATE webhook_events SET occurred_at = now() - interval '8 days'`)
	n, err := f.st.DeleteOldWebhookEvents(f.ctx, 7*24*time.Hour, 1)
	if err != nil || n != 1 {
		t.Fatalf("deleted %d, %v; want 1", n, err)
	}
	if got := f.deliveries(ep.ID); !slices.Equal(got, []int64{1}) {
		t.Fatalf("deliveries left: %v", got)
	}
}

// An endpoint every attempt to which failed for DisableAfter is turned
// off by the next failure; a success before that resets the clock.
func TestWebhookFailingEndpointTurnedOff(t *testing.T) {
	f := newFx(t)
	user := uuid.NewString()
	ep := f.endpoint(user, store.WebhookScopeUser, store.EventSessionStatus)
	f.createFor(user)
	var event string
	if err := f.st.Pool().QueryRow(f.ctx, `SELECT event_id::text FROM webhook_deliveries WHERE endpoint_id = $1`, ep.ID).Scan(&event); err != nil {
		t.Fatal(err)
	}
	fail := func(attempts int) string {
		t.Helper()
		c, err := f.st.ClaimWebhook(f.ctx, ep.ID, event, attempts, time.Minute, 8)
		if err != nil {
			t.Fatalf("claim: %v", err)
		}
		off, err := f.st.RecordWebhookOutcome(f.ctx, store.WebhookOutcome{EndpointID: ep.ID, EventID: event, Attempt: c.Attempt,
			Result: store.WebhookRetry, HTTPStatus: 500, Error: "500", RetryIn: 0, DisableAfter: 5 * 24 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return off
	}
	if off := fail(0); off != "" {
		t.Fatalf("first failure turned the endpoint off: %s", off)
	}
	f.exec(`UPDATE webhook_endpoints SET failing_since = now() - interval '4 days' WHERE id = $1`, ep.ID)
	if off := fail(1); off != "" {
		t.Fatalf("after 4 days: %s", off)
	}
	f.exec(`UPDATE webhook_endpoints SET failing_since = now() - interval '5 days 1 minute' WHERE id = $1`, ep.ID)
	if off := fail(2); off != store.WebhookDisabledFailing {
		t.Fatalf("after 5 days: %q, want failing", off)
	}
	got, err := f.st.GetWebhookEndpoint(f.ctx, user, ep.ID)
	if err != nil || got.Enabled || got.DisabledReason == nil || *got.DisabledReason != store.WebhookDisabledFailing {
		t.Fatalf("endpoint: %+v %v", got, err)
	}
	// Turned on again: the clock starts over.
	yes := true
	if got, err = f.st.UpdateWebhookEndpoint(f.ctx, user, ep.ID, store.WebhookPatch{Enabled: &yes}); err != nil ||
		!got.Enabled || got.DisabledReason != nil || got.FailingSince != nil {
		t.Fatalf("turned on: %+v %v", got, err)
	}
}

// Two statements that each make events for the same sessions, in
// opposite row orders, while a third transaction holds one session's
// sequence counter: each statement used to take the per-session counter
// locks in its own row order, so they deadlocked (Postgres aborted one,
// 40P01). The counters are taken in session order now: one statement
// waits for the other, both commit, and each session's events are
// numbered without a gap.
func TestWebhookSequencesDoNotDeadlock(t *testing.T) {
	f := newFx(t)
	f.endpoint(uuid.NewString(), store.WebhookScopeAll, store.WebhookEventTypes()...)
	lo, hi := f.create(), f.create() // one session.status event each
	if hi.SessionID < lo.SessionID {
		lo, hi = hi, lo
	}
	pool := f.st.Pool()
	holder, err := pool.Begin(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(f.ctx) //nolint:errcheck // committed below
	if _, err := holder.Exec(f.ctx, `SELECT 1 FROM webhook_sequences WHERE session_id = $1 FOR UPDATE`, hi.SessionID); err != nil {
		t.Fatal(err)
	}

	// insert stores one inbound message per session, in the order given,
	// in one statement, and reports its backend once it is waiting for a
	// lock.
	var n atomic.Int64
	insert := func(order ...store.Session) (waiting func() bool, done <-chan error) {
		conn, err := pool.Acquire(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		var pid int
		if err := conn.QueryRow(f.ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
			t.Fatal(err)
		}
		var users, sessions, ids []string
		for _, s := range order {
			users, sessions = append(users, s.UserID), append(sessions, s.SessionID)
			ids = append(ids, fmt.Sprintf("3EB0DEAD%08d", n.Add(1)))
		}
		ch := make(chan error, 1)
		go func() {
			defer conn.Release()
			_, err := conn.Exec(f.ctx, `INSERT INTO messages (user_id, session_id, direction, chat, text, wa_message_id, status, wa_timestamp)
				SELECT u, s, 'in', '+15550001', 'hi', w, 'received', now()
				FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY AS t(u, s, w, ord) ORDER BY ord`,
				users, sessions, ids)
			ch <- err
		}()
		return func() bool {
			var w bool
			_ = pool.QueryRow(f.ctx, `SELECT COALESCE(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&w)
			return w
		}, ch
	}
	bWaits, bDone := insert(hi, lo)
	testfactory.Eventually(t, "the first statement to wait for the held counter", bWaits)
	aWaits, aDone := insert(lo, hi)
	testfactory.Eventually(t, "the second statement to wait", aWaits)
	if err := holder.Commit(f.ctx); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]<-chan error{"hi-then-lo": bDone, "lo-then-hi": aDone} {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("statement %s: %v", name, err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("statement %s did not finish", name)
		}
	}
	for _, s := range []store.Session{lo, hi} {
		var seqs []int64
		rows, err := pool.Query(f.ctx, `SELECT sequence FROM webhook_events WHERE session_id = $1 ORDER BY sequence`, s.SessionID)
		if err != nil {
			t.Fatal(err)
		}
		seqs, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(seqs, []int64{1, 2, 3}) {
			t.Errorf("session %s: sequences %v, want [1 2 3]", s.SessionID, seqs)
		}
	}
}

// A statement that makes several events of one session numbers them in
// the order it made them (its rows' order), whatever their ids.
func TestWebhookStatementNumbersInRowOrder(t *testing.T) {
	f := newFx(t)
	s := f.create() // sequence 1
	var ids []string
	for i := range 20 {
		ids = append(ids, fmt.Sprintf("3EB0%08d-%s", 20-i, uuid.NewString()[:4]))
	}
	f.exec(`INSERT INTO messages (user_id, session_id, direction, chat, text, wa_message_id, status, wa_timestamp)
		SELECT $1, $2, 'in', '+15550001', 'hi', w, 'received', now()
		FROM unnest($3::text[]) WITH ORDINALITY AS t(w, ord) ORDER BY ord`, s.UserID, s.SessionID, ids)
	rows, err := f.st.Pool().Query(f.ctx, `SELECT snapshot->>'wa_message_id' FROM webhook_events
		WHERE session_id = $1 AND type = 'message.received' ORDER BY sequence`, s.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("events in sequence order %v, want the statement's order %v", got, ids)
	}
	var maxSeq int64
	if err := f.st.Pool().QueryRow(f.ctx, `SELECT max(sequence) FROM webhook_events WHERE session_id = $1`, s.SessionID).Scan(&maxSeq); err != nil {
		t.Fatal(err)
	}
	if maxSeq != 21 {
		t.Fatalf("last sequence %d, want 21", maxSeq)
	}
}

// TestWebhookNumberingOnlyWhenStaged: a statement that may change a status
// but makes no event (a status written again unchanged, the outbox's
// expiry check that matches no message) does not look for events to
// number, and one that makes events still gets them numbered in sequence.
// The look scanned the unnumbered-events index, whose entries of recently
// numbered events stay until Postgres prunes them: on every send and
// every restore.
func TestWebhookNumberingOnlyWhenStaged(t *testing.T) {
	f := newFx(t)
	s := f.create() // sequence 1
	// One connection, so that its statistics can be flushed for reading.
	conn, err := f.st.Pool().Acquire(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	run := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(f.ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	// Reads of webhook_events: sequential and index scans.
	reads := func() int64 {
		t.Helper()
		run(`SELECT pg_stat_force_next_flush()`)
		var n int64
		if err := conn.QueryRow(f.ctx, `SELECT seq_scan + coalesce(idx_scan, 0) FROM pg_stat_user_tables
			WHERE relname = 'webhook_events'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	before := reads()
	run(`UPDATE whatsapp_sessions SET status = status, status_reason = status_reason WHERE session_id = $1`, s.SessionID)
	run(`UPDATE messages SET status = 'failed', status_reason = 'expired' WHERE session_id = $1 AND status = 'queued'`, s.SessionID)
	if after := reads(); after != before {
		t.Fatalf("statements that made no event read webhook_events %d times", after-before)
	}

	run(`UPDATE whatsapp_sessions SET status = 'qr', status_reason = 'qr_code' WHERE session_id = $1`, s.SessionID) // 2
	run(`UPDATE whatsapp_sessions SET status = status WHERE session_id = $1`, s.SessionID)                          // none
	run(`UPDATE whatsapp_sessions SET status = 'connected', status_reason = 'paired' WHERE session_id = $1`, s.SessionID)
	rows, err := f.st.Pool().Query(f.ctx, `SELECT sequence, snapshot->>'status' FROM webhook_events
		WHERE session_id = $1 ORDER BY staged`, s.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	type ev struct {
		Seq    *int64
		Status string
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ev])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d events, want 3 (pending, qr, connected)", len(got))
	}
	for i, e := range got {
		if e.Seq == nil || *e.Seq != int64(i+1) {
			t.Fatalf("event %d (%s) has sequence %v, want %d", i+1, e.Status, e.Seq, i+1)
		}
	}
}
