package store_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"wasessions/internal/store"
	"wasessions/internal/testenv"
)

// Durations the tests use. Long TTLs keep rows from expiring or leases from
// lapsing on their own during a test; a test that needs a lapsed lease or a
// past expiry moves it into the past with SQL (see lapseLease, expire).
const (
	leaseTTL   = time.Hour
	sessionTTL = 24 * time.Hour
)

// fx is one test's database plus helpers that put rows into the states the
// tests need, through the store's own API wherever it has a way to.
type fx struct {
	t   testing.TB
	ctx context.Context
	st  *store.Store
}

func newFx(t testing.TB) *fx {
	t.Helper()
	st, _ := testenv.NewStore(t)
	return &fx{t: t, ctx: context.Background(), st: st}
}

var sessionSeq atomic.Int64

// newSessionID follows the API's format, "whatsapp_<userId>_<unixMillis>",
// with a counter instead of the clock so ids never collide by accident.
func newSessionID(userID string) string {
	return fmt.Sprintf("whatsapp_%s_%d", userID, sessionSeq.Add(1))
}

// create makes a new user with a pending session and returns it.
func (f *fx) create() store.Session {
	f.t.Helper()
	return f.createFor(uuid.NewString())
}

// createFor makes a pending session for userID, which must have no live one.
func (f *fx) createFor(userID string) store.Session {
	f.t.Helper()
	s, created, err := f.st.CreateSession(f.ctx, store.NewSession{UserID: userID, SessionID: newSessionID(userID), TTL: sessionTTL})
	if err != nil {
		f.t.Fatalf("create session: %v", err)
	}
	if !created {
		f.t.Fatalf("create session for %s: returned existing %s", userID, s.SessionID)
	}
	return s
}

func (f *fx) claim(sessionID, workerID string, mode store.ClaimMode) store.Fence {
	f.t.Helper()
	_, fence, err := f.st.Claim(f.ctx, sessionID, workerID, leaseTTL, mode)
	if err != nil {
		f.t.Fatalf("claim %s by %s: %v", sessionID, workerID, err)
	}
	return fence
}

// hosted makes a session in the given live status, hosted by workerID.
// Connected and reconnecting sessions get a device jid.
func (f *fx) hosted(workerID string, status store.Status) (store.Session, store.Fence) {
	f.t.Helper()
	s := f.create()
	fence := f.claim(s.SessionID, workerID, store.ClaimToHost)
	var err error
	switch status {
	case store.StatusPending:
		s = f.get(s.SessionID)
	case store.StatusQR:
		s, err = f.st.SetQR(f.ctx, fence, "data:image/png;base64,QR", "2@raw")
	case store.StatusConnected, store.StatusReconnecting:
		s, err = f.st.MarkConnected(f.ctx, fence, store.Linked{DeviceJID: deviceJID(), Phone: "15550001111", Name: "Ann", Reason: "paired"}, sessionTTL)
		if err == nil && status == store.StatusReconnecting {
			s, err = f.st.MarkReconnecting(f.ctx, fence, "socket_dropped", "")
		}
	default:
		f.t.Fatalf("hosted: %s is not a live status", status)
	}
	if err != nil {
		f.t.Fatalf("hosted %s: %v", status, err)
	}
	if s.Status != status {
		f.t.Fatalf("hosted: status %s, want %s", s.Status, status)
	}
	return s, fence
}

// unhosted is hosted followed by a lapse of the lease: the worker died.
func (f *fx) unhosted(status store.Status) store.Session {
	f.t.Helper()
	s, _ := f.hosted("w-dead-"+uuid.NewString()[:8], status)
	f.lapseLease(s.SessionID)
	return f.get(s.SessionID)
}

// ended makes a session that ended with the given final status.
func (f *fx) ended(status store.Status, keysDeleted bool) store.Session {
	f.t.Helper()
	s, fence := f.hosted("w-end", store.StatusConnected)
	reason := map[store.Status]store.Reason{
		store.StatusDisconnected: store.ReasonUserDisconnected,
		store.StatusLoggedOut:    store.ReasonPhoneUnlinked,
		store.StatusExpired:      store.ReasonQRTimeout,
		store.StatusFailed:       store.ReasonPairError,
	}[status]
	s, err := f.st.End(f.ctx, fence, store.Ending{Reason: reason, KeysDeleted: keysDeleted})
	if err != nil {
		f.t.Fatalf("end: %v", err)
	}
	return s
}

func deviceJID() string {
	// Unique per call, in whatsmeow's "user:device@server" form.
	return fmt.Sprintf("%d:%d@s.whatsapp.net", 15550000000+sessionSeq.Add(1), 7)
}

func (f *fx) get(sessionID string) store.Session {
	f.t.Helper()
	s, err := f.st.Get(f.ctx, sessionID)
	if err != nil {
		f.t.Fatalf("get %s: %v", sessionID, err)
	}
	return s
}

func (f *fx) exec(sql string, args ...any) {
	f.t.Helper()
	if _, err := f.st.Pool().Exec(f.ctx, sql, args...); err != nil {
		f.t.Fatalf("exec %q: %v", sql, err)
	}
}

// lapseLease moves a session's lease into the past, as if its worker had
// stopped renewing it, without touching the owner or epoch.
func (f *fx) lapseLease(sessionID string) {
	f.t.Helper()
	f.exec(`UPDATE whatsapp_sessions SET lease_until = now() - interval '1 second' WHERE session_id = $1`, sessionID)
}

// expire moves a session's expiry into the past.
func (f *fx) expire(sessionID string) {
	f.t.Helper()
	f.exec(`UPDATE whatsapp_sessions SET expires_at = now() - interval '1 second' WHERE session_id = $1`, sessionID)
}

func ids(ss []store.Session) map[string]bool {
	m := make(map[string]bool, len(ss))
	for _, s := range ss {
		m[s.SessionID] = true
	}
	return m
}
