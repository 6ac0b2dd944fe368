package store_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"wasessions/internal/store"
)

// A user double-clicking "link WhatsApp" (or 20 tabs doing it at once) must
// get one session, not several racing pairings: one row, every caller gets
// its id, exactly one caller is told it created it. Also when the callers'
// session ids collide (the API derives them from the same millisecond).
func TestCreateSessionConcurrent(t *testing.T) {
	t.Parallel()
	for _, sameID := range []bool{false, true} {
		t.Run(fmt.Sprintf("same session id %v", sameID), func(t *testing.T) {
			t.Parallel()
			f := newFx(t)
			for round := range 10 {
				user := uuid.NewString()
				const callers = 20
				var (
					wg      sync.WaitGroup
					start   = make(chan struct{})
					got     = make([]store.Session, callers)
					created = make([]bool, callers)
					errs    = make([]error, callers)
				)
				shared := newSessionID(user)
				for i := range callers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						id := shared
						if !sameID {
							id = newSessionID(user)
						}
						<-start
						got[i], created[i], errs[i] = f.st.CreateSession(f.ctx, store.NewSession{UserID: user, SessionID: id, TTL: sessionTTL})
					}()
				}
				close(start)
				wg.Wait()
				nCreated := 0
				for i := range callers {
					if errs[i] != nil {
						t.Fatalf("round %d caller %d: %v", round, i, errs[i])
					}
					if got[i].SessionID != got[0].SessionID {
						t.Fatalf("round %d: callers got sessions %s and %s", round, got[0].SessionID, got[i].SessionID)
					}
					if created[i] {
						nCreated++
					}
				}
				if nCreated != 1 {
					t.Fatalf("round %d: %d callers were told they created the session, want 1", round, nCreated)
				}
				var rows int
				if err := f.st.Pool().QueryRow(f.ctx, `SELECT count(*) FROM whatsapp_sessions WHERE user_id = $1`, user).Scan(&rows); err != nil {
					t.Fatal(err)
				}
				if rows != 1 {
					t.Fatalf("round %d: %d rows for one user", round, rows)
				}
			}
		})
	}
}

// A live session is returned as is; once it ended (any final status) or
// the user asked for a disconnect, the next create makes a new session.
func TestCreateSessionAfterEnd(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	for _, tc := range []struct {
		name  string
		setup func() store.Session
		isNew bool
	}{
		{"pending is returned", func() store.Session { return f.create() }, false},
		{"qr is returned", func() store.Session { s, _ := f.hosted("w", store.StatusQR); return s }, false},
		{"connected is returned", func() store.Session { s, _ := f.hosted("w", store.StatusConnected); return s }, false},
		{"reconnecting unhosted is returned", func() store.Session { return f.unhosted(store.StatusReconnecting) }, false},
		{"expired but hosted is returned (its worker ends it)", func() store.Session {
			s, _ := f.hosted("w", store.StatusQR)
			f.expire(s.SessionID)
			return s
		}, false},
		// Past its expiry with no worker, a live session can never be
		// hosted again (Claim refuses it): returning it would leave the
		// user with a session that never shows a QR until the next sweep.
		{"expired pending unhosted", func() store.Session {
			s := f.create()
			f.expire(s.SessionID)
			return s
		}, true},
		{"expired connected unhosted", func() store.Session {
			s := f.unhosted(store.StatusConnected)
			f.expire(s.SessionID)
			return s
		}, true},
		{"disconnected", func() store.Session { return f.ended(store.StatusDisconnected, true) }, true},
		{"logged out", func() store.Session { return f.ended(store.StatusLoggedOut, true) }, true},
		{"expired", func() store.Session { return f.ended(store.StatusExpired, false) }, true},
		{"failed", func() store.Session { return f.ended(store.StatusFailed, false) }, true},
		{"disconnect requested", func() store.Session {
			s, _ := f.hosted("w", store.StatusConnected)
			changed, err := f.st.RequestDisconnect(f.ctx, s.UserID)
			if err != nil || len(changed) != 1 || changed[0].SessionID != s.SessionID || changed[0].DesiredState != store.DesiredGone {
				t.Fatalf("request disconnect: %v %+v", err, changed)
			}
			return s
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := tc.setup()
			s, created, err := f.st.CreateSession(f.ctx, store.NewSession{UserID: old.UserID, SessionID: newSessionID(old.UserID), TTL: sessionTTL})
			if err != nil {
				t.Fatal(err)
			}
			if created != tc.isNew || (s.SessionID != old.SessionID) != tc.isNew {
				t.Fatalf("created %v, session %s (old %s); want new=%v", created, s.SessionID, old.SessionID, tc.isNew)
			}
			if tc.isNew && (s.Status != store.StatusPending || s.DesiredState != store.DesiredLinked || s.ExpiresAt == nil) {
				t.Fatalf("new session: %+v", s)
			}
			live, err := f.st.LiveSession(f.ctx, old.UserID)
			if err != nil || live.SessionID != s.SessionID {
				t.Fatalf("live session %s, %v; want %s", live.SessionID, err, s.SessionID)
			}
			cur, err := f.st.CurrentSession(f.ctx, old.UserID)
			if err != nil || cur.SessionID != s.SessionID {
				t.Fatalf("current session %s, %v; want %s", cur.SessionID, err, s.SessionID)
			}
			if prev := f.get(old.SessionID); tc.isNew && prev.Status.Live() && prev.DesiredState == store.DesiredLinked {
				t.Fatalf("the replaced session is still live: %s", prev.Status)
			}
		})
	}
}

// RequestDisconnect marks the live session gone (once), leaves other users
// alone, and frees the user to link again.
func TestRequestDisconnect(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	a, _ := f.hosted("w", store.StatusConnected)
	b, _ := f.hosted("w", store.StatusConnected)
	changed, err := f.st.RequestDisconnect(f.ctx, a.UserID)
	if err != nil || len(changed) != 1 || changed[0].SessionID != a.SessionID {
		t.Fatalf("request disconnect: %v %+v", err, changed)
	}
	if again, err := f.st.RequestDisconnect(f.ctx, a.UserID); err != nil || len(again) != 0 {
		t.Fatalf("second request changed %d sessions (%v)", len(again), err)
	}
	if got := f.get(a.SessionID); got.DesiredState != store.DesiredGone || got.Status != store.StatusConnected {
		t.Fatalf("after request: desired %s status %s", got.DesiredState, got.Status)
	}
	if got := f.get(b.SessionID); got.DesiredState != store.DesiredLinked {
		t.Fatalf("another user's session became %s", got.DesiredState)
	}
	if _, err := f.st.LiveSession(f.ctx, a.UserID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("live session after disconnect request: %v", err)
	}
	n, created, err := f.st.CreateSession(f.ctx, store.NewSession{UserID: a.UserID, SessionID: newSessionID(a.UserID), TTL: sessionTTL})
	if err != nil || !created || n.SessionID == a.SessionID {
		t.Fatalf("create after disconnect: created %v id %s err %v", created, n.SessionID, err)
	}
	// The old session is still there for the worker to log out.
	if got := f.get(a.SessionID); got.DesiredState != store.DesiredGone {
		t.Fatalf("old session: desired %s", got.DesiredState)
	}
}

// A user reaches only their own sessions (invariant 4).
func TestGetForUser(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	a, b := f.create(), f.create()
	if s, err := f.st.GetForUser(f.ctx, a.UserID, a.SessionID); err != nil || s.SessionID != a.SessionID {
		t.Fatalf("own session: %v", err)
	}
	if _, err := f.st.GetForUser(f.ctx, a.UserID, b.SessionID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another user's session: got %v, want ErrNotFound", err)
	}
}

// Stats count per user and globally: total rows, active (connected and
// authenticated), expired (ended by expiry or past expires_at).
func TestStats(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	userA, userB := uuid.NewString(), uuid.NewString()

	// A: connected (active), then an expired session, then a pending one
	// past its expiry that nothing has ended yet.
	a1 := f.createFor(userA)
	fa1 := f.claim(a1.SessionID, "w", store.ClaimToHost)
	if _, err := f.st.MarkConnected(f.ctx, fa1, store.Linked{DeviceJID: deviceJID(), Reason: "paired"}, sessionTTL); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.RequestDisconnect(f.ctx, userA); err != nil {
		t.Fatal(err)
	}
	// a1 is still connected (the worker has not logged out yet): active.
	a2 := f.createFor(userA)
	fa2 := f.claim(a2.SessionID, "w", store.ClaimToHost)
	if _, err := f.st.End(f.ctx, fa2, store.Ending{Reason: store.ReasonQRTimeout}); err != nil {
		t.Fatal(err)
	}
	a3 := f.createFor(userA)
	f.expire(a3.SessionID)
	// B: one pending session, and one disconnected.
	b1 := f.createFor(userB)
	fb1 := f.claim(b1.SessionID, "w", store.ClaimToHost)
	if _, err := f.st.End(f.ctx, fb1, store.Ending{Reason: store.ReasonUserDisconnected, KeysDeleted: true}); err != nil {
		t.Fatal(err)
	}
	f.createFor(userB)

	for _, tc := range []struct {
		user string
		want store.Stats
	}{
		{userA, store.Stats{Total: 3, Active: 1, Expired: 2}},
		{userB, store.Stats{Total: 2, Active: 0, Expired: 0}},
		{"", store.Stats{Total: 5, Active: 1, Expired: 2}},
		{uuid.NewString(), store.Stats{}},
	} {
		got, err := f.st.Stats(f.ctx, tc.user)
		if err != nil {
			t.Fatalf("stats(%q): %v", tc.user, err)
		}
		if got != tc.want {
			t.Errorf("stats(%q) = %+v, want %+v", tc.user, got, tc.want)
		}
	}
}

// A session id that an earlier session of the user already carries is an
// error (a unique violation, which the API retries with a new id), not a
// silent return of some other session.
func TestCreateSessionReusedID(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	old := f.ended(store.StatusDisconnected, true)
	_, _, err := f.st.CreateSession(f.ctx, store.NewSession{UserID: old.UserID, SessionID: old.SessionID, TTL: sessionTTL})
	if err == nil {
		t.Fatal("a reused session id created a session")
	}
	// The API retries a unique violation with a fresh id: keep it visible.
	if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		t.Fatalf("reused id: %v, want a unique violation in the chain", err)
	}
	if _, err := f.st.LiveSession(f.ctx, old.UserID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("live session after a refused create: %v", err)
	}
}
