package store_test

import (
	"slices"
	"testing"
	"time"

	"wasessions/internal/store"
)

// One heartbeat extends exactly the leases the worker still holds; only a
// connected session's expiry and last_seen slide (an unscanned QR must still
// expire, a reconnecting session must not be kept alive forever); another
// worker's session, a stale epoch, a session the user wants gone and a
// deleted row are reported lost and left untouched.
func TestRenew(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	const me = "w-me"
	connected, fConnected := f.hosted(me, store.StatusConnected)
	qr, fQR := f.hosted(me, store.StatusQR)
	reconnecting, fReconnecting := f.hosted(me, store.StatusReconnecting)
	pending, fPending := f.hosted(me, store.StatusPending)
	others, fOthers := f.hosted("w-other", store.StatusConnected)
	stale, fStale := f.hosted(me, store.StatusConnected)
	f.claim(stale.SessionID, me, store.ClaimToHost) // a newer incarnation of me
	gone, fGone := f.hosted(me, store.StatusConnected)
	if _, err := f.st.RequestDisconnect(f.ctx, gone.UserID); err != nil {
		t.Fatal(err)
	}
	deleted, fDeleted := f.hosted(me, store.StatusPending)
	f.exec(`DELETE FROM whatsapp_sessions WHERE session_id = $1`, deleted.SessionID)

	// Known, distinctive values to tell "slid" from "untouched": a lease
	// about to run out, an expiry an hour out, last_seen a day ago.
	f.exec(`UPDATE whatsapp_sessions SET lease_until = now() + interval '5 seconds',
		expires_at = date_trunc('second', now()) + interval '1 hour',
		last_seen = date_trunc('second', now()) - interval '1 day'`)
	before := map[string]store.Session{}
	for _, s := range []store.Session{connected, qr, reconnecting, pending, others, stale, gone} {
		before[s.SessionID] = f.get(s.SessionID)
	}

	held := []store.Held{}
	for _, fe := range []store.Fence{fConnected, fQR, fReconnecting, fPending, fOthers, fStale, fGone, fDeleted} {
		held = append(held, store.Held{SessionID: fe.SessionID, Epoch: fe.Epoch})
	}
	r, err := f.st.Renew(f.ctx, me, held, leaseTTL, sessionTTL)
	if err != nil {
		t.Fatal(err)
	}

	wantKept := []string{connected.SessionID, qr.SessionID, reconnecting.SessionID, pending.SessionID}
	wantLost := []string{others.SessionID, stale.SessionID, gone.SessionID, deleted.SessionID}
	var kept []string
	for id := range r.Kept {
		kept = append(kept, id)
	}
	slices.Sort(kept)
	slices.Sort(wantKept)
	lost := slices.Sorted(slices.Values(r.Lost))
	slices.Sort(wantLost)
	if !slices.Equal(kept, wantKept) || !slices.Equal(lost, wantLost) {
		t.Fatalf("kept %v lost %v\nwant kept %v lost %v", kept, lost, wantKept, wantLost)
	}

	var now time.Time
	if err := f.st.Pool().QueryRow(f.ctx, `SELECT now()`).Scan(&now); err != nil {
		t.Fatal(err)
	}
	for _, id := range wantKept {
		got, was := f.get(id), before[id]
		if !got.LeaseUntil.After(now.Add(leaseTTL - time.Minute)) {
			t.Errorf("%s (%s): lease_until %v not extended by %v", id, got.Status, got.LeaseUntil, leaseTTL)
		}
		if got.LeaseEpoch != was.LeaseEpoch {
			t.Errorf("%s: renew changed the epoch %d→%d", id, was.LeaseEpoch, got.LeaseEpoch)
		}
		slides := got.Status == store.StatusConnected
		if slid := got.ExpiresAt.After(now.Add(sessionTTL - time.Minute)); slid != slides {
			t.Errorf("%s (%s): expires_at %v → %v, slid=%v want %v", id, got.Status, was.ExpiresAt, got.ExpiresAt, slid, slides)
		}
		if !slides && !got.ExpiresAt.Equal(*was.ExpiresAt) {
			t.Errorf("%s (%s): expires_at changed %v → %v", id, got.Status, was.ExpiresAt, got.ExpiresAt)
		}
		if moved := !got.LastSeen.Equal(*was.LastSeen); moved != slides {
			t.Errorf("%s (%s): last_seen %v → %v, moved=%v want %v", id, got.Status, was.LastSeen, got.LastSeen, moved, slides)
		}
	}
	for _, s := range []store.Session{others, stale, gone} {
		got, was := f.get(s.SessionID), before[s.SessionID]
		if !got.LeaseUntil.Equal(*was.LeaseUntil) || !got.ExpiresAt.Equal(*was.ExpiresAt) || !got.LastSeen.Equal(*was.LastSeen) ||
			got.LeaseEpoch != was.LeaseEpoch || store.Str(got.WorkerID) != store.Str(was.WorkerID) {
			t.Errorf("%s (not mine to renew) changed:\n got %+v\nwant %+v", s.SessionID, got, was)
		}
	}

	// Nothing held: no statement, nothing kept or lost.
	if r, err := f.st.Renew(f.ctx, me, nil, leaseTTL, sessionTTL); err != nil || len(r.Kept) != 0 || len(r.Lost) != 0 {
		t.Fatalf("empty renew: %+v %v", r, err)
	}
}
