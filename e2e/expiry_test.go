package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"wasessions/e2e/harness"
)

// Scenario 11, expiry and cleanup. A connected session's expiry slides
// forward with the heartbeats, so it never expires while it is in use: once
// it has fallen store.ExpiryStep (a 24th of SESSION_TTL) behind now +
// SESSION_TTL, the next heartbeat moves it (migrations/00020). A
// session that stays unconnected past its expires_at (here: the phone is
// offline, the client keeps trying to reconnect) is removed by the cleanup,
// once through the admin endpoint and once by the scheduler: its client is
// stopped first, then its device keys and its row are deleted.
//
// SESSION_TTL passing is simulated by moving expires_at into the past in
// Postgres: its minimum (1m) would make the test wait minutes for nothing.
func TestExpiryAndCleanup(t *testing.T) {
	s := newStack(t, stackOpts{})
	admin := newUser()
	keep := s.link(newUser(), "+15550008881", "Ivo")

	// A connected session's expiry slides. Half an hour of its hour has
	// passed, as far as its expiry knows: more than the step, so the next
	// heartbeat slides it back to a full SESSION_TTL ahead.
	if _, err := s.DB.Pool().Exec(context.Background(),
		`UPDATE whatsapp_sessions SET expires_at = now() + interval '30 minutes' WHERE session_id = $1`, keep.sessionID); err != nil {
		t.Fatal(err)
	}
	first, err := s.client.status(keep.user)
	if err != nil || first.ExpiresAt == nil {
		t.Fatalf("status: %+v %v", first, err)
	}
	s.WaitFor("the connected session's expiry to slide forward", harness.WaitLong, func() (bool, string) {
		st, err := s.client.status(keep.user)
		if err != nil || st.ExpiresAt == nil {
			return false, fmt.Sprint(err)
		}
		return st.ExpiresAt.After(*first.ExpiresAt) && time.Until(*st.ExpiresAt) > 59*time.Minute,
			fmt.Sprintf("expires at %s, first %s", st.ExpiresAt, first.ExpiresAt)
	})

	// The admin endpoint.
	gone := s.link(newUser(), "+15550008882", "Joana")
	s.expireOffline(gone)
	var res struct {
		Cleaned   int `json:"cleanedCount"`
		HandedOff int `json:"handedOff"`
	}
	if _, err := s.client.data("POST", pathCleanup, admin, true, http.StatusOK, &res); err != nil {
		t.Fatal(err)
	}
	if res.Cleaned != 1 || res.HandedOff != 1 {
		t.Fatalf("cleanup answered %+v, want 1 cleaned, 1 handed off to its worker", res)
	}
	s.checkCleanedUp(gone, keep)
	// A user (not an admin) cannot run it.
	if r, err := s.client.do("POST", pathCleanup, keep.user, false); err != nil || r.Status != http.StatusForbidden {
		t.Fatalf("cleanup as a user: %s %v, want 403", r, err)
	}

	// The scheduler: cleanup every 2 s instead of hourly.
	s.Sched.Stop(45 * time.Second)
	s.Sched.Setenv("CLEANUP_CRON", "@every 2s")
	gone2 := s.link(newUser(), "+15550008883", "Kim")
	s.expireOffline(gone2)
	s.StartScheduler()
	s.WaitFor("the scheduler's cleanup to delete the expired session", harness.WaitLong, func() (bool, string) {
		_, err := s.DB.Get(context.Background(), gone2.sessionID)
		return err != nil, "row still there"
	})
	s.checkCleanedUp(gone2, keep)
	if !s.Sched.LogContains(`"Cleaned up 1 expired WhatsApp sessions"`) &&
		!s.Workers["w1"].LogContains(`"Cleaned up 1 expired WhatsApp sessions"`) {
		t.Error(`no program logged "Cleaned up 1 expired WhatsApp sessions"`)
	}
}

// expireOffline takes the phone of l offline (logins refused, its socket
// dropped), waits until the session shows reconnecting, still hosted by its
// worker, and moves its expiry into the past, as if SESSION_TTL had passed
// that way. Logins are refused until checkCleanedUp.
func (s *stack) expireOffline(l linked) {
	s.T.Helper()
	if err := s.phone.RefuseLogins(10 * time.Minute); err != nil {
		s.T.Fatal(err)
	}
	if dropped, err := s.phone.Drop(l.jid); err != nil || !dropped {
		s.T.Fatalf("drop: %v %v", dropped, err)
	}
	s.WaitFor("the session to show reconnecting", harness.WaitLong, func() (bool, string) {
		st, err := s.client.status(l.user)
		return err == nil && st.Status == "reconnecting", fmt.Sprintf("status=%s reason=%s err=%v", st.Status, st.reason(), err)
	})
	if r := s.Row(l.sessionID); !r.LeaseLive {
		s.T.Fatalf("the reconnecting session is not hosted (worker %q)", str(r.WorkerID))
	}
	if _, err := s.DB.Pool().Exec(context.Background(),
		`UPDATE whatsapp_sessions SET expires_at = now() - interval '1 second' WHERE session_id = $1`, l.sessionID); err != nil {
		s.T.Fatal(err)
	}
}

// checkCleanedUp checks that gone's row and keys are deleted and its client
// stopped (once the phone is back online it never logs in again), while
// keep is untouched.
func (s *stack) checkCleanedUp(gone, keep linked) {
	s.T.Helper()
	if _, err := s.DB.Get(context.Background(), gone.sessionID); err == nil {
		s.T.Fatalf("session %s is still in Postgres", gone.sessionID)
	}
	if s.KeysExist(gone.jid) {
		s.T.Fatal("the expired session's device keys are still in Postgres")
	}
	if r, err := s.client.do("GET", pathStatus, gone.user, false); err != nil || r.Status != http.StatusNotFound {
		s.T.Fatalf("status of the deleted session's user: %s %v, want 404", r, err)
	}
	if d, found, err := s.phone.Device(gone.jid); err != nil || (found && d.Connected) {
		s.T.Fatalf("the emulator shows the expired device connected: %+v %v", d, err)
	}
	s.checkHostedOnce(1)
	// Phone online again: a client that was not really stopped would log
	// in within its next reconnect attempt (whatsmeow retries every few
	// seconds).
	before := s.EmuStats()
	if err := s.phone.RefuseLogins(0); err != nil {
		s.T.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	if after := s.EmuStats(); after.Logins != before.Logins {
		s.T.Fatalf("%d logins after the phone came back online: the expired session's client still runs", after.Logins-before.Logins)
	}
	st, err := s.client.status(keep.user)
	if err != nil || st.Status != "connected" {
		s.T.Fatalf("the session in use: %+v %v, want connected", st, err)
	}
}
