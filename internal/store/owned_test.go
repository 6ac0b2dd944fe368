package store_test

import (
	"errors"
	"slices"
	"testing"

	"wasessions/internal/store"
)

// A worker restarting under its stable id takes back exactly the live,
// wanted sessions it hosted, whether their leases are still live or
// lapsed, and nothing another worker hosts or that ended or is going away.
func TestOwnedBy(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	const me = "w-me"
	want := map[string]bool{}
	s, _ := f.hosted(me, store.StatusConnected)
	want[s.SessionID] = true
	s, _ = f.hosted(me, store.StatusQR)
	f.lapseLease(s.SessionID)
	want[s.SessionID] = true
	s, _ = f.hosted(me, store.StatusReconnecting)
	want[s.SessionID] = true

	f.hosted("w-other", store.StatusConnected)
	gone, _ := f.hosted(me, store.StatusConnected)
	if _, err := f.st.RequestDisconnect(f.ctx, gone.UserID); err != nil {
		t.Fatal(err)
	}
	_, fence := f.hosted(me, store.StatusConnected)
	if _, err := f.st.Release(f.ctx, fence, "worker_shutdown", ""); err != nil {
		t.Fatal(err)
	}
	expired, _ := f.hosted(me, store.StatusConnected)
	f.lapseLease(expired.SessionID)
	f.expire(expired.SessionID)
	if _, err := f.st.ExpireUnhosted(f.ctx, 10); err != nil {
		t.Fatal(err)
	}

	got, err := f.st.OwnedBy(f.ctx, me)
	if err != nil {
		t.Fatal(err)
	}
	if g, w := sortedKeys(ids(got)), sortedKeys(want); !slices.Equal(g, w) {
		t.Fatalf("owned %v\nwant %v", g, w)
	}
}

// Unlease gives the lease up and nothing else, and only for the current
// holder.
func TestUnlease(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	s, old := f.hosted("w-1", store.StatusConnected)
	if _, err := f.st.RequestDisconnect(f.ctx, s.UserID); err != nil {
		t.Fatal(err)
	}
	cur := f.claim(s.SessionID, "w-1", store.ClaimToEnd)
	if _, err := f.st.Unlease(f.ctx, old, "stale"); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("stale unlease: %v, want ErrFenced", err)
	}
	before := f.get(s.SessionID)
	after, err := f.st.Unlease(f.ctx, cur, store.ErrLogoutPending)
	if err != nil {
		t.Fatal(err)
	}
	if after.WorkerID != nil || after.LeaseLive || after.Status != before.Status || after.DesiredState != store.DesiredGone ||
		store.Str(after.DeviceJID) != store.Str(before.DeviceJID) || store.Str(after.LastError) != string(store.ErrLogoutPending) {
		t.Fatalf("after unlease: %+v", after)
	}
	// Free for the next attempt, by any worker.
	if _, _, err := f.st.Claim(f.ctx, s.SessionID, "w-2", leaseTTL, store.ClaimToEnd); err != nil {
		t.Fatalf("claim after unlease: %v", err)
	}
}
