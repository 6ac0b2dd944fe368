package store_test

import (
	"errors"
	"testing"

	"wasessions/internal/store"
)

// Release hands a session to the next worker in the state that lets it
// continue: a linked device restores (reconnecting, no QR), a pairing
// starts over (pending, stale QR gone, since the next worker's QR would
// differ); End finishes a session for good and forgets the device only
// when its keys are gone.
func TestReleaseAndEnd(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	for _, tc := range []struct {
		name       string
		from       store.Status
		op         func(store.Fence) (store.Session, error)
		wantStatus store.Status
		wantDevice bool
		wantAuth   bool
	}{
		{"release qr", store.StatusQR, func(fe store.Fence) (store.Session, error) {
			return f.st.Release(f.ctx, fe, "worker_shutdown", "")
		}, store.StatusPending, false, false},
		{"release pending", store.StatusPending, func(fe store.Fence) (store.Session, error) {
			return f.st.Release(f.ctx, fe, "worker_shutdown", "")
		}, store.StatusPending, false, false},
		{"release connected", store.StatusConnected, func(fe store.Fence) (store.Session, error) {
			return f.st.Release(f.ctx, fe, "connect_failed", "dial: refused")
		}, store.StatusReconnecting, true, true},
		{"end logged out", store.StatusConnected, func(fe store.Fence) (store.Session, error) {
			return f.st.End(f.ctx, fe, store.Ending{Reason: store.ReasonPhoneUnlinked, KeysDeleted: true})
		}, store.StatusLoggedOut, false, false},
		{"end failed keeps keys", store.StatusConnected, func(fe store.Fence) (store.Session, error) {
			return f.st.End(f.ctx, fe, store.Ending{Reason: store.ReasonConnectFailed, LastError: store.ErrServerUnreachable})
		}, store.StatusFailed, true, true},
		{"end qr timeout", store.StatusQR, func(fe store.Fence) (store.Session, error) {
			return f.st.End(f.ctx, fe, store.Ending{Reason: store.ReasonQRTimeout})
		}, store.StatusExpired, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, fence := f.hosted("w", tc.from)
			got, err := tc.op(fence)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != tc.wantStatus || (got.DeviceJID != nil) != tc.wantDevice || got.IsAuthenticated != tc.wantAuth {
				t.Errorf("status %s device %q auth %v; want %s device=%v auth=%v",
					got.Status, store.Str(got.DeviceJID), got.IsAuthenticated, tc.wantStatus, tc.wantDevice, tc.wantAuth)
			}
			if got.WorkerID != nil || got.LeaseUntil != nil || got.LeaseLive || got.IsConnected || got.QRCode != nil || got.QRRaw != nil {
				t.Errorf("lease or connection left behind: %+v", got)
			}
			if got.LeaseEpoch != s.LeaseEpoch {
				t.Errorf("epoch %d → %d", s.LeaseEpoch, got.LeaseEpoch)
			}
			// The fence is spent: a second write with it fails.
			if _, err := f.st.SetQR(f.ctx, fence, "x", "y"); !errors.Is(err, store.ErrFenced) {
				t.Errorf("write after giving up the lease: %v, want ErrFenced", err)
			}
		})
	}
}
