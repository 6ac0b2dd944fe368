package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"syscall"
	"testing"
	"time"

	"wasessions/e2e/harness"
	"wasessions/internal/testfactory"
)

// Scenario 3, graceful restart: SIGTERM to the worker hosting a session
// while another runs. The other worker has it connected in under 3 s, from
// the stored keys (no new pairing), and a frontend polling the status sees
// connected throughout, or reconnecting briefly. The stopped worker comes
// back under the same id (a deploy) and the next round stops the other
// one, so the session moves back and forth.
func TestGracefulRestartHandsOver(t *testing.T) {
	s := newStack(t, stackOpts{Workers: []string{"w1", "w2"}})
	user := newUser()
	l := s.link(user, "+15550006666", "Flor")
	const rounds = 3
	const bound = 3 * time.Second

	var figures []time.Duration
	for round := 1; round <= rounds; round++ {
		host := str(s.Row(l.sessionID).WorkerID)
		before := s.EmuStats()
		watch := s.watchStatus(user)

		start := time.Now()
		done := s.Workers[host].Signal(syscall.SIGTERM)
		to, took := s.waitHostedElsewhere(l.sessionID, host, start, 30*time.Second)
		seen := watch.finish()
		s.Workers[host].WaitExit(done, 45*time.Second)

		figures = append(figures, took)
		t.Logf("round %d: SIGTERM to %s; connected on %s %s later", round, host, to, took.Round(time.Millisecond))
		if took >= bound {
			t.Errorf("round %d: takeover took %s, want under %s", round, took.Round(time.Millisecond), bound)
		}
		// What the frontend saw.
		var longest time.Duration
		var runStart time.Time
		for _, o := range seen {
			switch {
			case o.err != "":
				t.Errorf("round %d: status poll failed during the handoff: %s", round, o.err)
			case o.status == "connected":
				runStart = time.Time{}
			case o.status == "reconnecting":
				if runStart.IsZero() {
					runStart = o.at
				}
				longest = max(longest, o.at.Sub(runStart))
			default:
				t.Errorf("round %d: status %q (reason %q) during the handoff; want connected or reconnecting", round, o.status, o.reason)
			}
		}
		if longest >= bound {
			t.Errorf("round %d: the status showed reconnecting for %s", round, longest.Round(time.Millisecond))
		}
		t.Logf("round %d: %d status polls: %s; longest reconnecting stretch %s", round, len(seen), summarize(seen), longest.Round(time.Millisecond))

		after := s.EmuStats()
		if after.Pairings != before.Pairings {
			t.Fatalf("round %d: %d new pairings: the takeover asked for a QR", round, after.Pairings-before.Pairings)
		}
		if after.Conflicts != 0 {
			t.Fatalf("round %d: %d conflicts", round, after.Conflicts)
		}
		// The deploy brings the stopped worker back under its id; it does
		// not take the session back (no second client).
		s.StartWorker(host)
		s.checkHostedOnce(1)
		if got := str(s.Row(l.sessionID).WorkerID); got != to {
			t.Fatalf("round %d: after %s came back the session moved to %q", round, host, got)
		}
	}
	t.Logf("FIGURE handoff (SIGTERM -> connected on the other worker), %d rounds: %s", rounds, durations(figures))
}

// Scenario 4, crash: SIGKILL to the worker hosting a session. Its lease
// lapses (LEASE_TTL), the scheduler's next reconcile (RESTORE_INTERVAL)
// enqueues a restore, and the other worker connects the session from its
// stored keys: within LEASE_TTL + RESTORE_INTERVAL + 2 s, with no new
// pairing and never two connections.
func TestCrashFailover(t *testing.T) {
	s := newStack(t, stackOpts{Workers: []string{"w1", "w2"}})
	l := s.link(newUser(), "+15550007777", "Gil")
	const rounds = 2
	bound := harness.LeaseTTL + harness.RestoreInterval + 2*time.Second

	var figures []time.Duration
	for round := 1; round <= rounds; round++ {
		host := str(s.Row(l.sessionID).WorkerID)
		before := s.EmuStats()

		start := time.Now()
		s.Workers[host].Signal(syscall.SIGKILL)
		to, took := s.waitHostedElsewhere(l.sessionID, host, start, 60*time.Second)
		s.Workers[host].Kill() // reaped

		figures = append(figures, took)
		t.Logf("round %d: SIGKILL to %s; connected on %s %s later", round, host, to, took.Round(time.Millisecond))
		if took > bound {
			t.Errorf("round %d: failover took %s, want at most LEASE_TTL + RESTORE_INTERVAL + 2s = %s", round, took.Round(time.Millisecond), bound)
		}
		after := s.EmuStats()
		if after.Pairings != before.Pairings || after.Conflicts != 0 {
			t.Fatalf("round %d: emulator before %+v, after %+v: want no new pairing and no conflict", round, before, after)
		}
		// The crashed worker restarts under the same id: nothing to take
		// back, nothing doubled.
		s.StartWorker(host)
		s.checkHostedOnce(1)
	}
	t.Logf("FIGURE failover (SIGKILL -> connected on the other worker, LEASE_TTL=%s RESTORE_INTERVAL=%s), %d rounds: %s",
		harness.LeaseTTL, harness.RestoreInterval, rounds, durations(figures))
}

// waitHostedElsewhere polls Postgres every 10 ms until the session is
// connected under a live lease of a worker other than from, and returns
// that worker and the time since start.
func (s *stack) waitHostedElsewhere(sessionID, from string, start time.Time, within time.Duration) (string, time.Duration) {
	s.T.Helper()
	var to string
	var took time.Duration
	err := testfactory.Poll(within, 10*time.Millisecond, func() (bool, string) {
		r, err := s.DB.Get(context.Background(), sessionID)
		if err != nil {
			return false, err.Error()
		}
		if r.Status == "connected" && r.IsConnected && r.LeaseLive && str(r.WorkerID) != "" && str(r.WorkerID) != from {
			to, took = str(r.WorkerID), time.Since(start)
			return true, ""
		}
		return false, fmt.Sprintf("status=%s reason=%s worker=%q lease_live=%v", r.Status, str(r.StatusReason), str(r.WorkerID), r.LeaseLive)
	})
	if err != nil {
		s.T.Fatalf("session %s was not taken over from %s: %v", sessionID, from, err)
	}
	return to, took
}

// observation is one status poll of the frontend's view.
type observation struct {
	at     time.Time
	status string
	reason string
	err    string
}

// statusWatch polls GET /status every 25 ms, as a frontend might, until
// finish.
type statusWatch struct {
	stop chan struct{}
	done chan struct{}
	seen []observation
}

func (s *stack) watchStatus(user string) *statusWatch {
	w := &statusWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			st, err := s.client.status(user)
			o := observation{at: time.Now(), status: st.Status, reason: st.reason()}
			if err != nil {
				o.err = err.Error()
			}
			w.seen = append(w.seen, o)
			time.Sleep(25 * time.Millisecond)
		}
	}()
	return w
}

func (w *statusWatch) finish() []observation {
	close(w.stop)
	<-w.done
	return w.seen
}

// summarize counts observations by status/reason.
func summarize(obs []observation) string {
	n := map[string]int{}
	for _, o := range obs {
		k := o.status + "/" + o.reason
		if o.err != "" {
			k = "error"
		}
		n[k]++
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s×%d", k, n[k])
	}
	return strings.Join(parts, " ")
}

// durations prints a list of durations with min, median and max.
func durations(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	sorted := append([]time.Duration(nil), ds...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = d.Round(time.Millisecond).String()
	}
	return fmt.Sprintf("[%s] min %s median %s max %s", strings.Join(parts, " "),
		sorted[0].Round(time.Millisecond), sorted[len(sorted)/2].Round(time.Millisecond), sorted[len(sorted)-1].Round(time.Millisecond))
}

// A mass handoff while WhatsApp refuses logins for a while: w2, hosting
// every session, stops; w1 restores them at most RESTORE_CONCURRENCY (2) at
// a time, and the first ones hold their slots until the refusal ends. The
// sessions still waiting for a slot must not have their leases running out
// meanwhile (w1 would stop each client right after it connected and the
// session would have to be restored once more): every session is restored
// exactly once, and w1 loses no lease.
func TestMassHandoffWhileLoginsRefused(t *testing.T) {
	const n = 12
	s := newStack(t, stackOpts{Workers: []string{"w1", "w2"}, Env: map[string]string{"RESTORE_CONCURRENCY": "2"}})
	s.Workers["w1"].Stop(45 * time.Second)
	ls := s.linkMany(n, 6)
	ids := sessionIDs(ls)
	s.StartWorker("w1")
	if per, err := s.ConnectedPerWorker(ids, nil); err != nil || per["w2"] != n {
		t.Fatalf("sessions per worker %v (%v), want all %d on w2", per, err, n)
	}

	before := s.EmuStats()
	if err := s.phone.RefuseLogins(3 * harness.LeaseTTL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s.Workers["w2"].Stop(45 * time.Second)
	s.waitAllConnected(ids, 2*harness.WaitLong)
	t.Logf("all %d sessions connected on w1 %s after w2 was stopped (logins refused for %s)", n, time.Since(start).Round(time.Millisecond), 3*harness.LeaseTTL)
	after := s.EmuStats()
	if got := after.Logins - before.Logins; got != n {
		t.Errorf("%d logins for %d sessions: some were restored more than once (emulator before %+v, after %+v)", got, n, before, after)
	}
	if lost := s.Metric("w1", "wasessions_worker_leases_lost_total"); lost != 0 {
		t.Errorf("w1 lost %v leases of sessions it was restoring", lost)
	}
	s.checkHostedOnce(n)
}
