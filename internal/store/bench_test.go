package store_test

import (
	"fmt"
	"testing"

	"wasessions/internal/store"
)

// BenchmarkRenew is one worker's heartbeat over 1,000 held leases (half of
// them connected, whose expiry slides): one UPDATE statement.
func BenchmarkRenew(b *testing.B) {
	f := newFx(b)
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
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/n, "µs/lease")
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
