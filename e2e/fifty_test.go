package e2e

import (
	"fmt"
	"testing"
	"time"

	"wasessions/e2e/harness"
)

// fifty is how many sessions the scale scenarios link.
const fifty = 50

// Scenarios 5 and 6 at scale, in four phases on one stack of two workers:
//
//  1. Never two clients, spread: 50 sessions linked through the API are
//     spread over both workers, each hosted once, and the emulator counts
//     no conflict.
//  2. Full restart, graceful: SIGTERM to every program at once, then all
//     started again: every session is connected again without a QR.
//  3. Full restart, crash: SIGKILL to every program at once, then all
//     started again: the same.
//  4. One worker hosting all 50: SIGTERM to w2 hands its sessions to w1
//     (a mass handoff); w1's memory (VmRSS) is measured.
//
// The emulator (WhatsApp) keeps running throughout; it is not part of the
// service. After every phase no session has paired again and the emulator
// has counted no conflict.
func TestFiftySessionsSurviveFullRestarts(t *testing.T) {
	s := newStack(t, stackOpts{Workers: []string{"w1", "w2"}})
	idle, err := s.Workers["w1"].RSSKiB()
	if err != nil {
		t.Fatal(err)
	}

	// 1. Link 50 sessions, ten users at a time.
	start := time.Now()
	ls := s.linkMany(fifty, 10)
	t.Logf("linked %d sessions in %s", fifty, time.Since(start).Round(time.Millisecond))
	ids := sessionIDs(ls)
	s.waitAllConnected(ids, harness.WaitLong)
	per, err := s.ConnectedPerWorker(ids, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("phase 1: sessions per worker after linking: %v", per)
	if per["w1"] == 0 || per["w2"] == 0 {
		t.Fatalf("sessions per worker %v: all on one worker", per)
	}
	s.checkHostedOnce(fifty)
	s.checkNoRepairing(fifty)

	// 2. Graceful full restart.
	s.StopAll()
	if n, err := s.phone.ConnectedDevices(); err != nil || n != 0 {
		t.Fatalf("after stopping every program the emulator still sees %d connected devices (err %v)", n, err)
	}
	start = time.Now()
	s.StartAll()
	s.waitAllConnected(ids, 2*harness.WaitLong)
	took := time.Since(start)
	per, _ = s.ConnectedPerWorker(ids, nil)
	t.Logf("phase 2: all %d connected %s after the programs were started again (graceful stop before); per worker %v",
		fifty, took.Round(time.Millisecond), per)
	t.Logf("FIGURE full restart (graceful stop; start of all programs -> %d sessions connected): %s", fifty, took.Round(time.Millisecond))
	s.checkHostedOnce(fifty)
	s.checkNoRepairing(fifty)

	// 3. Crash of everything.
	s.KillAll()
	start = time.Now()
	s.StartAll()
	s.waitAllConnected(ids, 2*harness.WaitLong)
	took = time.Since(start)
	per, _ = s.ConnectedPerWorker(ids, nil)
	t.Logf("phase 3: all %d connected %s after the programs were started again (SIGKILL before); per worker %v",
		fifty, took.Round(time.Millisecond), per)
	t.Logf("FIGURE full restart (SIGKILL of all; start of all programs -> %d sessions connected): %s", fifty, took.Round(time.Millisecond))
	s.checkHostedOnce(fifty)
	s.checkNoRepairing(fifty)

	// 4. w1 hosts all 50.
	start = time.Now()
	s.Workers["w2"].Stop(45 * time.Second)
	s.WaitFor("w1 to host all sessions", 2*harness.WaitLong, func() (bool, string) {
		per, err := s.ConnectedPerWorker(ids, nil)
		return err == nil && per["w1"] == fifty, fmt.Sprintf("%v %v", per, err)
	})
	t.Logf("phase 4: SIGTERM to w2 moved its sessions to w1 in %s", time.Since(start).Round(time.Millisecond))
	s.checkHostedOnce(fifty)
	s.checkNoRepairing(fifty)
	time.Sleep(3 * time.Second) // a few heartbeats, so memory reflects steady hosting
	rss, err := s.Workers["w1"].RSSKiB()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE worker RSS hosting %d sessions (race=%v): %.1f MiB (%.1f MiB when it had just started, hosting none)",
		fifty, programs.Race(), float64(rss)/1024, float64(idle)/1024)
}

// checkNoRepairing fails the test if the emulator has seen more pairings
// than the n sessions linked: some restore asked for a new QR.
func (s *stack) checkNoRepairing(n int) {
	s.T.Helper()
	st := s.EmuStats()
	if st.Pairings != int64(n) || st.Conflicts != 0 {
		s.T.Fatalf("emulator %+v: want exactly %d pairings and no conflict", st, n)
	}
}
