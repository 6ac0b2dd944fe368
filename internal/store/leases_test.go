package store_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"wasessions/internal/store"
)

// Two workers racing for one session must never both host it (invariant
// 1): of N concurrent claims exactly one wins and the others are told the
// lease is held, both on a fresh session and on a lapsed lease that all of
// them try to take over.
func TestClaimRaceExactlyOneWins(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	const rounds, racers = 50, 8
	for round := range rounds {
		s := f.create()
		prevEpoch := int64(0)
		if round%2 == 1 {
			// Take-over race: the previous owner died and its lease lapsed.
			f.claim(s.SessionID, "w-old", store.ClaimToHost)
			f.lapseLease(s.SessionID)
			prevEpoch = 1
		}
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			fences  = make([]store.Fence, racers)
			errs    = make([]error, racers)
			workers = make([]string, racers)
		)
		for i := range racers {
			workers[i] = fmt.Sprintf("w-%d", i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, fences[i], errs[i] = f.st.Claim(f.ctx, s.SessionID, workers[i], leaseTTL, store.ClaimToHost)
			}()
		}
		close(start)
		wg.Wait()

		winner := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if winner >= 0 {
					t.Fatalf("round %d: both %s and %s claimed %s", round, workers[winner], workers[i], s.SessionID)
				}
				winner = i
			case !errors.Is(err, store.ErrLeaseHeld):
				t.Fatalf("round %d: %s: got %v, want ErrLeaseHeld", round, workers[i], err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no claim of %s succeeded", round, s.SessionID)
		}
		row := f.get(s.SessionID)
		if store.Str(row.WorkerID) != workers[winner] || row.LeaseEpoch != prevEpoch+1 || fences[winner].Epoch != row.LeaseEpoch {
			t.Fatalf("round %d: row owner %q epoch %d, winner %s fence epoch %d (want epoch %d)",
				round, store.Str(row.WorkerID), row.LeaseEpoch, workers[winner], fences[winner].Epoch, prevEpoch+1)
		}
	}
}

// Claim admits only the states its mode is for: a restore must not revive a
// session the user disconnected, that ended, or that expired; a disconnect
// must not be carried out on a session the user still wants.
func TestClaimModes(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	type setup func() string
	pending := func() string { return f.create().SessionID }
	connectedUnhosted := func() string { return f.unhosted(store.StatusConnected).SessionID }
	reconnecting := func() string {
		s, fence := f.hosted("w-prev", store.StatusConnected)
		if _, err := f.st.Release(f.ctx, fence, "worker_shutdown", ""); err != nil {
			t.Fatal(err)
		}
		return s.SessionID
	}
	desiredGone := func() string {
		s := f.unhosted(store.StatusConnected)
		if _, err := f.st.RequestDisconnect(f.ctx, s.UserID); err != nil {
			t.Fatal(err)
		}
		return s.SessionID
	}
	ended := func() string { return f.ended(store.StatusFailed, false).SessionID }
	expired := func() string {
		s := f.create()
		f.expire(s.SessionID)
		return s.SessionID
	}
	expiredConnected := func() string {
		s := f.unhosted(store.StatusConnected)
		f.expire(s.SessionID)
		return s.SessionID
	}
	for _, tc := range []struct {
		name  string
		setup setup
		mode  store.ClaimMode
		want  error
	}{
		{"host pending", pending, store.ClaimToHost, nil},
		{"host connected unhosted", connectedUnhosted, store.ClaimToHost, nil},
		{"host reconnecting", reconnecting, store.ClaimToHost, nil},
		{"host desired gone", desiredGone, store.ClaimToHost, store.ErrNotClaimable},
		{"host ended", ended, store.ClaimToHost, store.ErrNotClaimable},
		{"host expired pending", expired, store.ClaimToHost, store.ErrNotClaimable},
		{"host expired connected", expiredConnected, store.ClaimToHost, store.ErrNotClaimable},
		{"end desired gone", desiredGone, store.ClaimToEnd, nil},
		{"end desired linked", connectedUnhosted, store.ClaimToEnd, store.ErrNotClaimable},
		{"end pending", pending, store.ClaimToEnd, store.ErrNotClaimable},
		{"host missing", func() string { return "whatsapp_missing_1" }, store.ClaimToHost, store.ErrNotFound},
		{"end missing", func() string { return "whatsapp_missing_2" }, store.ClaimToEnd, store.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := tc.setup()
			var before store.Session
			if tc.want != store.ErrNotFound {
				before = f.get(id)
			}
			s, fence, err := f.st.Claim(f.ctx, id, "w-claimer", leaseTTL, tc.mode)
			if !errors.Is(err, tc.want) {
				t.Fatalf("claim: got %v, want %v", err, tc.want)
			}
			if tc.want != nil {
				if tc.want == store.ErrNotFound {
					return
				}
				after := f.get(id)
				if after.LeaseEpoch != before.LeaseEpoch || store.Str(after.WorkerID) != store.Str(before.WorkerID) {
					t.Fatalf("refused claim changed the lease: epoch %d→%d worker %q→%q",
						before.LeaseEpoch, after.LeaseEpoch, store.Str(before.WorkerID), store.Str(after.WorkerID))
				}
				return
			}
			if store.Str(s.WorkerID) != "w-claimer" || !s.LeaseLive || s.LeaseEpoch != before.LeaseEpoch+1 || fence.Epoch != s.LeaseEpoch {
				t.Fatalf("claimed row: worker %q live %v epoch %d (before %d), fence %+v",
					store.Str(s.WorkerID), s.LeaseLive, s.LeaseEpoch, before.LeaseEpoch, fence)
			}
		})
	}
}

// A live lease keeps other workers out; once it lapses (Postgres' clock)
// another worker takes it over with a higher epoch, and the old owner can no
// longer claim it back while the new lease is live.
func TestClaimAfterLeaseExpiry(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	s := f.create()
	a := f.claim(s.SessionID, "w-a", store.ClaimToHost)

	cur, _, err := f.st.Claim(f.ctx, s.SessionID, "w-b", leaseTTL, store.ClaimToHost)
	if !errors.Is(err, store.ErrLeaseHeld) {
		t.Fatalf("claim of a live lease: got %v, want ErrLeaseHeld", err)
	}
	if store.Str(cur.WorkerID) != "w-a" {
		t.Fatalf("ErrLeaseHeld should report the holder, got %q", store.Str(cur.WorkerID))
	}

	f.lapseLease(s.SessionID)
	b := f.claim(s.SessionID, "w-b", store.ClaimToHost)
	if b.Epoch <= a.Epoch {
		t.Fatalf("take-over epoch %d not above the old %d", b.Epoch, a.Epoch)
	}
	if _, _, err := f.st.Claim(f.ctx, s.SessionID, "w-a", leaseTTL, store.ClaimToHost); !errors.Is(err, store.ErrLeaseHeld) {
		t.Fatalf("old owner reclaiming a live lease: got %v, want ErrLeaseHeld", err)
	}

	// The real clock path, with a short TTL: no SQL moves the lease.
	c, err := f.st.Get(f.ctx, s.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	_, short, err := f.st.Claim(f.ctx, s.SessionID, "w-b", time.Second, store.ClaimToHost)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, fc, err := f.st.Claim(f.ctx, s.SessionID, "w-c", leaseTTL, store.ClaimToHost)
		if err == nil {
			if fc.Epoch != short.Epoch+1 || short.Epoch != c.LeaseEpoch+1 {
				t.Fatalf("epochs: before %d, short %d, take-over %d", c.LeaseEpoch, short.Epoch, fc.Epoch)
			}
			break
		}
		if !errors.Is(err, store.ErrLeaseHeld) {
			t.Fatalf("claim while the short lease runs: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("a 1s lease was still held after 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A worker whose lease another worker took over (or an earlier incarnation
// of the same worker id, restarted) must not be able to write anything: not
// a QR, not a connection, not an end, not a release, and its heartbeat must
// report the session as lost. The new owner's data stays as it wrote it.
func TestStaleFenceCannotWrite(t *testing.T) {
	t.Parallel()
	for _, newOwner := range []string{"w-new", "w-old"} {
		t.Run("new owner "+newOwner, func(t *testing.T) {
			t.Parallel()
			f := newFx(t)
			s := f.create()
			old := f.claim(s.SessionID, "w-old", store.ClaimToHost)
			f.lapseLease(s.SessionID)
			cur := f.claim(s.SessionID, newOwner, store.ClaimToHost)
			if _, err := f.st.SetQR(f.ctx, cur, "data:image/png;base64,NEW", "2@new"); err != nil {
				t.Fatalf("new owner SetQR: %v", err)
			}
			want := f.get(s.SessionID)

			writes := []struct {
				name string
				do   func() error
			}{
				{"SetQR", func() error {
					_, err := f.st.SetQR(f.ctx, old, "data:image/png;base64,OLD", "2@old")
					return err
				}},
				{"SetPairingCode", func() error { _, err := f.st.SetPairingCode(f.ctx, old, "ABCD-EFGH"); return err }},
				{"MarkDevice", func() error { _, err := f.st.MarkDevice(f.ctx, old, deviceJID(), "1555", "Old"); return err }},
				{"MarkConnected", func() error {
					_, err := f.st.MarkConnected(f.ctx, old, store.Linked{DeviceJID: deviceJID(), Phone: "1555", Reason: "paired"}, sessionTTL)
					return err
				}},
				{"MarkReconnecting", func() error { _, err := f.st.MarkReconnecting(f.ctx, old, "socket_dropped", "eof"); return err }},
				{"SetUserName", func() error { _, err := f.st.SetUserName(f.ctx, old, "Old"); return err }},
				{"End", func() error {
					_, err := f.st.End(f.ctx, old, store.Ending{Reason: store.ReasonPhoneUnlinked, KeysDeleted: true})
					return err
				}},
				{"Release", func() error { _, err := f.st.Release(f.ctx, old, "worker_shutdown", "bye"); return err }},
			}
			for _, w := range writes {
				if err := w.do(); !errors.Is(err, store.ErrFenced) {
					t.Errorf("stale %s: got %v, want ErrFenced", w.name, err)
				}
			}
			r, err := f.st.Renew(f.ctx, "w-old", []store.Held{{SessionID: s.SessionID, Epoch: old.Epoch}}, leaseTTL, sessionTTL)
			if err != nil {
				t.Fatal(err)
			}
			if r.Kept[s.SessionID] || len(r.Lost) != 1 || r.Lost[0] != s.SessionID {
				t.Errorf("stale renew: kept %v lost %v, want lost [%s]", r.Kept, r.Lost, s.SessionID)
			}

			got := f.get(s.SessionID)
			if got.Status != want.Status || store.Str(got.QRCode) != store.Str(want.QRCode) || store.Str(got.WorkerID) != newOwner ||
				got.LeaseEpoch != want.LeaseEpoch || !got.LeaseUntil.Equal(*want.LeaseUntil) || !got.UpdatedAt.Equal(want.UpdatedAt) ||
				got.DeviceJID != nil || store.Str(got.StatusReason) != "qr_code" {
				t.Fatalf("the new owner's row changed:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// ExtendClaim keeps a claim that is not renewed by the heartbeat (a
// logout's) alive for its holder, lapsed or not as long as nobody claimed
// the session since, and refuses anyone else.
func TestExtendClaim(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	s := f.create()
	fence := f.claim(s.SessionID, "w-1", store.ClaimToHost)
	f.lapseLease(s.SessionID)
	if err := f.st.ExtendClaim(f.ctx, fence, leaseTTL); err != nil {
		t.Fatalf("extend a lapsed claim nobody took: %v", err)
	}
	if got := f.get(s.SessionID); !got.LeaseLive || got.LeaseEpoch != fence.Epoch {
		t.Fatalf("after the extension: lease live %v, epoch %d (want %d)", got.LeaseLive, got.LeaseEpoch, fence.Epoch)
	}
	f.lapseLease(s.SessionID)
	f.claim(s.SessionID, "w-2", store.ClaimToHost)
	if err := f.st.ExtendClaim(f.ctx, fence, leaseTTL); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("extend after another worker claimed: %v, want ErrFenced", err)
	}
	if got := f.get(s.SessionID); store.Str(got.WorkerID) != "w-2" {
		t.Fatalf("the session is %s's after a fenced extension, want w-2's", store.Str(got.WorkerID))
	}
}
