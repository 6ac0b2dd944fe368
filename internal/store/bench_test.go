package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"wasessions/internal/store"
	"wasessions/internal/testenv"
)

// BenchmarkRenew is one worker's heartbeat over 1,000 held leases (half of
// them connected, whose expiry slides): one UPDATE statement. shared runs
// on the shared test Postgres, private on a cluster of its own (fsync off,
// like every private test cluster): Postgres makes room for a renewal's
// HOT update by pruning the versions the previous one left dead, which a
// transaction open anywhere in the cluster (other tests, on a shared
// machine) holds back. hot% is the share of renewals that were HOT.
func BenchmarkRenew(b *testing.B) {
	b.Run("shared", func(b *testing.B) { benchRenew(b, newFx(b)) })
	b.Run("private", func(b *testing.B) {
		srv := testenv.StartPostgresServer(b)
		ctx := context.Background()
		pool, err := store.Connect(ctx, srv.NewDatabase(b), 20)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(pool.Close)
		testenv.Migrate(b, pool)
		benchRenew(b, &fx{t: b, ctx: ctx, st: store.New(pool)})
	})
}

func benchRenew(b *testing.B, f *fx) {
	const n = 1000
	const me = "w-bench"
	f.exec(`INSERT INTO users (id) SELECT gen_random_uuid() FROM generate_series(1, $1)`, n)
	f.exec(`INSERT INTO whatsapp_sessions (user_id, session_id, status, expires_at, device_jid)
		SELECT id, 'whatsapp_' || id || '_1', CASE WHEN row_number() OVER () % 2 = 0 THEN 'connected' ELSE 'qr' END,
			now() + interval '1 day', id || ':1@s.whatsapp.net'
		FROM users`)
	f.exec(`ANALYZE whatsapp_sessions`)
	rows, err := f.st.Pool().Query(f.ctx, `SELECT session_id FROM whatsapp_sessions`)
	if err != nil {
		b.Fatal(err)
	}
	var sessionIDs []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			b.Fatal(err)
		}
		sessionIDs = append(sessionIDs, id)
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	held := make([]store.Held, 0, n)
	for _, id := range sessionIDs {
		fence := f.claim(id, me, store.ClaimToHost)
		held = append(held, store.Held{SessionID: id, Epoch: fence.Epoch})
	}
	upd0, hot0 := tupleCounts(b, f)
	b.ResetTimer()
	for b.Loop() {
		r, err := f.st.Renew(f.ctx, me, held, leaseTTL, sessionTTL)
		if err != nil {
			b.Fatal(err)
		}
		if len(r.Kept) != n {
			b.Fatalf("kept %d of %d", len(r.Kept), n)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/n, "µs/lease")
	// Statistics reach the view once each backend flushes them (within a
	// second of going idle).
	time.Sleep(1500 * time.Millisecond)
	if upd, hot := tupleCounts(b, f); upd > upd0 {
		b.ReportMetric(100*float64(hot-hot0)/float64(upd-upd0), "hot%")
	}
}

// tupleCounts is Postgres' count of updated rows of whatsapp_sessions and
// of those that were HOT, as far as its statistics have them.
func tupleCounts(b *testing.B, f *fx) (upd, hot int64) {
	b.Helper()
	if err := f.st.Pool().QueryRow(f.ctx, `SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
		WHERE relname = 'whatsapp_sessions'`).Scan(&upd, &hot); err != nil {
		b.Fatal(err)
	}
	return upd, hot
}

// BenchmarkClaim is one lease claim: a worker re-claiming a session it
// holds (the UPDATE matches; a new epoch every time), over a table of
// 10,000 sessions.
func BenchmarkClaim(b *testing.B) {
	f := newFx(b)
	f.exec(`INSERT INTO users (id) SELECT gen_random_uuid() FROM generate_series(1, 10000)`)
	f.exec(`INSERT INTO whatsapp_sessions (user_id, session_id, expires_at)
		SELECT id, 'whatsapp_' || id || '_1', now() + interval '1 day' FROM users`)
	f.exec(`ANALYZE whatsapp_sessions`)
	var ids []string
	rows, err := f.st.Pool().Query(f.ctx, `SELECT session_id FROM whatsapp_sessions LIMIT 100`)
	if err != nil {
		b.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, id)
	}
	if rows.Err() != nil || len(ids) != 100 {
		b.Fatalf("sessions: %d, %v", len(ids), rows.Err())
	}
	i := 0
	for b.Loop() {
		if _, _, err := f.st.Claim(f.ctx, ids[i%len(ids)], "w-bench", leaseTTL, store.ClaimToHost); err != nil {
			b.Fatal(fmt.Errorf("claim: %w", err))
		}
		i++
	}
}

// BenchmarkSaveInboundWithWebhook stores one received message per op, with
// its message.received event and one delivery (an admin's "all"
// endpoint): what the webhook outbox adds to a worker's write of a
// received message (migrations 00019 and 00021).
func BenchmarkSaveInboundWithWebhook(b *testing.B) {
	f := newFx(b)
	f.endpoint("00000000-0000-0000-0000-0000000000be", store.WebhookScopeAll, store.WebhookEventTypes()...)
	s := f.create()
	b.ResetTimer()
	for i := range b.N {
		if _, _, err := f.st.SaveInbound(f.ctx, store.Inbound{SessionID: s.SessionID, UserID: s.UserID, Chat: "+15550001",
			Text: "hello", WAMessageID: fmt.Sprintf("3EB0BENCH%08d", i), Timestamp: time.Now()}); err != nil {
			b.Fatal(err)
		}
	}
}
