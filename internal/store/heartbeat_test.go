package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"wasessions/internal/store"
	"wasessions/internal/testenv"
)

// TestHeartbeatsAreHOTAndStillFenced renews a worker's leases a few times
// and checks, from Postgres' own counters, that the renewals were HOT
// updates (no index entry written: what makes a heartbeat of thousands of
// leases cheap), and that fencing holds as before with that layout: a
// lease another worker claimed is not renewed by its former holder, whose
// writes stay fenced off, and the new holder's lease is untouched.
func TestHeartbeatsAreHOTAndStillFenced(t *testing.T) {
	f := hotFixture(t)
	const me, other, n = "w-hot", "w-other", 40

	var held []store.Held
	for range n {
		_, fe := f.hosted(me, store.StatusConnected)
		held = append(held, store.Held{SessionID: fe.SessionID, Epoch: fe.Epoch})
	}
	// One session was taken over while me was paused.
	taken, stale := f.hosted(me, store.StatusConnected)
	f.lapseLease(taken.SessionID)
	newer := f.claim(taken.SessionID, other, store.ClaimToHost)
	held = append(held, store.Held{SessionID: stale.SessionID, Epoch: stale.Epoch})
	takenBefore := f.get(taken.SessionID)

	// The first heartbeats after the rows were written find their pages
	// full of the setup's row versions (claims, status changes: not HOT)
	// and move rows to pages with room; counted are the heartbeats after,
	// as a worker hosting these sessions makes them all day.
	const warmup, rounds = 3, 5
	var upd0, hot0 int64
	for i := range warmup + rounds {
		if i == warmup {
			upd0, hot0 = tupleUpdates(t, f)
		}
		r, err := f.st.Renew(f.ctx, me, held, leaseTTL, sessionTTL)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Kept) != n || len(r.Lost) != 1 || r.Lost[0] != taken.SessionID {
			t.Fatalf("renewal kept %d, lost %v; want %d kept and only the taken session lost", len(r.Kept), r.Lost, n)
		}
	}
	upd, hot := tupleUpdates(t, f)
	upd, hot = upd-upd0, hot-hot0
	if upd != rounds*n {
		t.Fatalf("Postgres counted %d row updates for %d renewals of %d leases", upd, rounds, n)
	}
	if hot < upd*9/10 {
		t.Fatalf("%d of %d lease renewals were HOT updates: renewals write index entries", hot, upd)
	}
	t.Logf("%d of %d lease renewals were HOT updates", hot, upd)

	// Fencing with the new layout: the former holder's renewals left the
	// new holder's lease alone, and its writes are refused.
	after := f.get(taken.SessionID)
	if store.Str(after.WorkerID) != other || after.LeaseEpoch != newer.Epoch || !after.LeaseUntil.Equal(*takenBefore.LeaseUntil) {
		t.Fatalf("taken session after the old holder's heartbeats: worker %s epoch %d lease %v, want %s, %d, %v",
			store.Str(after.WorkerID), after.LeaseEpoch, after.LeaseUntil, other, newer.Epoch, takenBefore.LeaseUntil)
	}
	if _, err := f.st.MarkReconnecting(f.ctx, stale, "socket_dropped", ""); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("a write with the old holder's fence: %v, want ErrFenced", err)
	}
	if r, err := f.st.Renew(f.ctx, other, []store.Held{{SessionID: newer.SessionID, Epoch: newer.Epoch}}, leaseTTL, sessionTTL); err != nil || !r.Kept[newer.SessionID] {
		t.Fatalf("the new holder's renewal: %+v, %v", r, err)
	}
}

// hotFixture is a migrated database on a cluster of its own, used through
// one connection, for counting HOT updates.
func hotFixture(t *testing.T) *fx {
	t.Helper()
	// A private cluster: Postgres prunes the row versions an update left
	// dead (making room on the page for the next one's) only once no
	// snapshot anywhere in the cluster may still see them, and the shared
	// test cluster always has other tests' transactions open.
	srv := testenv.StartPostgresServer(t)
	dsn := srv.NewDatabase(t)
	ctx := context.Background()
	mig, err := store.Connect(ctx, dsn, 4)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Migrate(t, mig)
	mig.Close()
	// Everything runs on one connection, so that its statistics can be
	// flushed for reading when the test needs them.
	pool, err := store.Connect(ctx, dsn, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	f := &fx{t: t, ctx: ctx, st: store.New(pool)}
	// An autovacuum ANALYZE of the table (due after a few hundred updates)
	// holds a snapshot while it runs, and the row versions it may still
	// see cannot be pruned to make room for HOT updates: on a busy machine
	// that would make the count below depend on its timing.
	f.exec(`ALTER TABLE whatsapp_sessions SET (autovacuum_enabled = false)`)
	return f
}

// TestRestoreIsHOT: a worker restarted after a crash claims its sessions
// again and writes each one connected (reason restored). Neither write
// changes an indexed column of a session that was connected (the expiry
// slides only once it is ExpiryStep behind, as heartbeats slide it), so a
// restore writes no index entry: with thousands of sessions coming back
// at once, index writes were a large part of what a restore cost
// Postgres.
func TestRestoreIsHOT(t *testing.T) {
	f := hotFixture(t)
	const me, n = "w-restore", 40
	var fences []store.Fence
	for range n {
		_, fe := f.hosted(me, store.StatusConnected)
		fences = append(fences, fe)
	}
	// Settle the pages as heartbeats would (TestHeartbeatsAreHOTAndStillFenced).
	held := make([]store.Held, n)
	for i, fe := range fences {
		held[i] = store.Held{SessionID: fe.SessionID, Epoch: fe.Epoch}
	}
	for range 3 {
		if _, err := f.st.Renew(f.ctx, me, held, leaseTTL, sessionTTL); err != nil {
			t.Fatal(err)
		}
	}
	before := make([]store.Session, n)
	for i, fe := range fences {
		before[i] = f.get(fe.SessionID)
	}

	upd0, hot0 := tupleUpdates(t, f)
	for i, fe := range fences {
		again := f.claim(fe.SessionID, me, store.ClaimToHost)
		s, err := f.st.MarkConnected(f.ctx, again, store.Linked{DeviceJID: *before[i].DeviceJID,
			Phone: store.Str(before[i].PhoneNumber), Name: "Ann", Reason: store.ReasonRestored}, sessionTTL)
		if err != nil {
			t.Fatal(err)
		}
		if s.Status != store.StatusConnected || store.Str(s.StatusReason) != string(store.ReasonRestored) ||
			s.ExpiresAt == nil || time.Until(*s.ExpiresAt) < sessionTTL-store.ExpiryStep(sessionTTL) {
			t.Fatalf("restored session: status %s reason %s expires %v, want connected, restored, at least %s ahead",
				s.Status, store.Str(s.StatusReason), s.ExpiresAt, sessionTTL-store.ExpiryStep(sessionTTL))
		}
	}
	upd, hot := tupleUpdates(t, f)
	upd, hot = upd-upd0, hot-hot0
	if upd != 2*n {
		t.Fatalf("Postgres counted %d row updates for %d claims and %d connected writes", upd, n, n)
	}
	if hot < upd*9/10 {
		t.Fatalf("%d of %d restore writes were HOT updates: a restore writes index entries", hot, upd)
	}
	t.Logf("%d of %d restore writes were HOT updates", hot, upd)

	// An expiry a step behind slides to a full TTL ahead.
	f.exec(`UPDATE whatsapp_sessions SET expires_at = now() + $2::interval - $3::interval - interval '1 minute' WHERE session_id = $1`,
		fences[0].SessionID, sessionTTL, store.ExpiryStep(sessionTTL))
	again := f.claim(fences[0].SessionID, me, store.ClaimToHost)
	s, err := f.st.MarkConnected(f.ctx, again, store.Linked{DeviceJID: *before[0].DeviceJID, Reason: store.ReasonRestored}, sessionTTL)
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(*s.ExpiresAt); left < sessionTTL-time.Minute {
		t.Fatalf("an expiry a step behind was not slid: %s left, want about %s", left, sessionTTL)
	}
}

// tupleUpdates is Postgres' count of updated rows of whatsapp_sessions,
// and of those that were HOT, with everything the test's one connection
// did so far.
func tupleUpdates(t *testing.T, f *fx) (upd, hot int64) {
	t.Helper()
	if _, err := f.st.Pool().Exec(f.ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
		t.Fatal(err)
	}
	if err := f.st.Pool().QueryRow(f.ctx, `SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
		WHERE relname = 'whatsapp_sessions'`).Scan(&upd, &hot); err != nil {
		t.Fatal(err)
	}
	return upd, hot
}
