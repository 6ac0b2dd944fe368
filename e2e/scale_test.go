//go:build scale

package e2e

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"wasessions/e2e/harness"
)

// The scale harness (`make scale`): the e2e stack (the real programs as
// processes, the emulator as WhatsApp and phone) at a size and with a fault
// chosen on the command line. It is a test only so that it runs the very
// same stack code as the end-to-end suite; it is built only with the
// `scale` tag, so neither `make test` nor `go test ./e2e` runs it.
//
//	make scale N=1000 WORKERS=2 FAULT=kill
var (
	scaleN        = flag.Int("scale.n", 100, "sessions to link")
	scaleWorkers  = flag.Int("scale.workers", 1, "workers (w1, w2, ...)")
	scaleFault    = flag.String("scale.fault", "kill", "none; kill: SIGKILL every worker and start them again; restart: SIGTERM every worker and start them again")
	scaleLinkConc = flag.Int("scale.link-concurrency", 16, "users linking at once")
	scaleLeaseTTL = flag.Duration("scale.lease-ttl", 30*time.Second, "LEASE_TTL (heartbeat every third of it)")
	scaleRestore  = flag.Int("scale.restore-concurrency", 0, "RESTORE_CONCURRENCY (0: the default)")
	scaleMax      = flag.Int("scale.max-sessions", 0, "WORKER_MAX_SESSIONS (0: N)")
	scaleIdle     = flag.Int("scale.heartbeats", 3, "heartbeat periods to measure idle hosting over")
)

// TestScale links -scale.n sessions through the API and the emulator's
// phone, measures what hosting them costs, runs -scale.fault, and prints
// FIGURE lines: RSS and goroutines per session, CPU per heartbeat period,
// Postgres connections, restore time, new pairings, conflicts.
func TestScale(t *testing.T) {
	n, nw := *scaleN, *scaleWorkers
	ids := make([]string, nw)
	for i := range ids {
		ids[i] = fmt.Sprintf("w%d", i+1)
	}
	max := *scaleMax
	if max == 0 {
		max = n
	}
	env := map[string]string{
		"WORKER_MAX_SESSIONS": strconv.Itoa(max),
		"LEASE_TTL":           scaleLeaseTTL.String(),
		"RESTORE_INTERVAL":    "5s",
		"SESSION_TTL":         "24h",
	}
	if *scaleRestore > 0 {
		env["RESTORE_CONCURRENCY"] = strconv.Itoa(*scaleRestore)
	}
	// No state file: the emulator would re-marshal every device's keys
	// (about 28 KiB each) every few seconds while thousands pair.
	s := newStack(t, stackOpts{Workers: ids, Env: env, EmuArgs: []string{"-state", ""}})
	t.Logf("scale: %d sessions on %d worker(s) %v, fault %q, race=%v, env %v", n, nw, ids, *scaleFault, programs.Race(), env)

	idle := map[string]procSample{}
	for _, id := range ids {
		idle[id] = s.sample(id)
	}
	pg := s.watchPostgresConns()

	// Link.
	start := time.Now()
	var done atomic.Int64
	stopProgress := s.progress("linked", n, func() int { return int(done.Load()) })
	ls := s.linkManyCounting(n, *scaleLinkConc, &done)
	stopProgress()
	took := time.Since(start)
	sids := sessionIDs(ls)
	s.waitAllConnected(sids, 10*time.Minute)
	t.Logf("FIGURE linked %d sessions in %s (%.1f pairings/s, %d users at once)", n, took.Round(time.Millisecond),
		float64(n)/took.Seconds(), *scaleLinkConc)
	s.checkHostedOnce(n)
	s.checkNoRepairing(n)

	// Idle hosting.
	s.report("after linking", ids, idle)

	// The fault.
	switch *scaleFault {
	case "none":
	case "kill", "restart":
		// A killed worker's rows still read connected under a live lease
		// until LEASE_TTL passes: a session is back when a lease taken
		// after the fault (a higher epoch) holds it connected.
		epochs := s.epochs(sids)
		var wg sync.WaitGroup
		for _, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if *scaleFault == "kill" {
					s.Workers[id].Kill()
				} else {
					s.Workers[id].Stop(2 * time.Minute)
				}
			}()
		}
		wg.Wait()
		start = time.Now()
		for _, id := range ids {
			wg.Add(1)
			go func() { defer wg.Done(); s.StartWorker(id) }()
		}
		wg.Wait()
		var back atomic.Int64
		stopProgress := s.progress("back", n, func() int { return int(back.Load()) })
		s.WaitFor(fmt.Sprintf("all %d sessions connected again", n), 10*time.Minute, func() (bool, string) {
			per, err := s.ConnectedPerWorker(sids, epochs)
			if err != nil {
				return false, err.Error()
			}
			c := harness.Total(per)
			back.Store(int64(c))
			return c == n, fmt.Sprintf("%d connected under a new lease", c)
		})
		took = time.Since(start)
		stopProgress()
		s.waitAllConnected(sids, 5*time.Minute)
		t.Logf("FIGURE restore after %s of %d worker(s): start of the workers -> all %d sessions connected under live leases: %s (RESTORE_CONCURRENCY %s)",
			map[string]string{"kill": "SIGKILL", "restart": "SIGTERM"}[*scaleFault], nw, n, took.Round(time.Millisecond), orDefault(env["RESTORE_CONCURRENCY"], "4"))
		s.checkHostedOnce(n)
		for _, id := range ids {
			idle[id] = procSample{} // the restarted process has no idle reading
		}
		s.report("after the fault", ids, idle)
	default:
		t.Fatalf("unknown -scale.fault %q", *scaleFault)
	}

	st := s.EmuStats()
	t.Logf("FIGURE new pairings %d, conflicts %d (emulator: %d pairings for %d sessions, %d logins)",
		st.Pairings-int64(n), st.Conflicts, st.Pairings, n, st.Logins)
	t.Logf("FIGURE Postgres connections of the stack: at most %d at once (sampled every second)", pg())
	s.checkNoRepairing(n)
}

// epochs are the sessions' lease epochs now.
func (s *stack) epochs(ids []string) []int64 {
	s.T.Helper()
	out := make([]int64, len(ids))
	for i, id := range ids {
		out[i] = s.Row(id).LeaseEpoch
	}
	return out
}

// progress logs count() every 10 s until the returned stop is called.
func (s *stack) progress(what string, n int, count func() int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	start := time.Now()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Second):
				s.T.Logf("  %s %d/%d after %s", what, count(), n, time.Since(start).Round(time.Second))
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// procSample is what a worker's process costs at one moment.
type procSample struct {
	at         time.Time
	rssKiB     int
	goroutines float64
	cpuSeconds float64
}

func (s *stack) sample(id string) procSample {
	s.T.Helper()
	rss, err := s.Workers[id].RSSKiB()
	if err != nil {
		s.T.Fatal(err)
	}
	return procSample{at: time.Now(), rssKiB: rss, goroutines: s.Metric(id, "go_goroutines"),
		cpuSeconds: s.Metric(id, "process_cpu_seconds_total")}
}

// report measures each worker over -scale.heartbeats heartbeat periods
// (LEASE_TTL/3 each) of idle hosting and logs the figures.
func (s *stack) report(phase string, ids []string, idle map[string]procSample) {
	s.T.Helper()
	period := *scaleLeaseTTL / 3
	// Let the last connects and their first heartbeat settle.
	time.Sleep(period)
	first := map[string]procSample{}
	for _, id := range ids {
		first[id] = s.sample(id)
	}
	time.Sleep(time.Duration(*scaleIdle) * period)
	for _, id := range ids {
		last := s.sample(id)
		hosted, err := s.Hosted(id)
		if err != nil {
			s.T.Fatal(err)
		}
		rounds := last.at.Sub(first[id].at).Seconds() / period.Seconds()
		cpu := (last.cpuSeconds - first[id].cpuSeconds) / rounds
		line := fmt.Sprintf("FIGURE %s, worker %s hosting %d: RSS %.1f MiB", phase, id, hosted, float64(last.rssKiB)/1024)
		if base := idle[id]; base.rssKiB > 0 && hosted > 0 {
			line += fmt.Sprintf(" (%.1f MiB idle: %.1f KiB per session)", float64(base.rssKiB)/1024,
				float64(last.rssKiB-base.rssKiB)/float64(hosted))
		}
		line += fmt.Sprintf("; goroutines %.0f", last.goroutines)
		if base := idle[id]; base.rssKiB > 0 && hosted > 0 {
			line += fmt.Sprintf(" (%.0f idle: %.2f per session)", base.goroutines, (last.goroutines-base.goroutines)/float64(hosted))
		}
		line += fmt.Sprintf("; CPU %.0f ms per heartbeat period (%s, over %.1f periods of idle hosting: heartbeat, keepalives, everything)",
			cpu*1000, period, rounds)
		s.T.Log(line)
	}
}

// watchPostgresConns samples the stack's Postgres connections (the
// harness's own pool left out) every second until the test ends; the
// returned function is the highest count seen so far.
func (s *stack) watchPostgresConns() func() int {
	var peak atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			var c int64
			err := s.DB.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND backend_type = 'client backend'`).Scan(&c)
			if err == nil {
				c -= int64(s.DB.Pool().Stat().TotalConns())
				if c > peak.Load() {
					peak.Store(c)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	s.T.Cleanup(func() { cancel(); wg.Wait() })
	return func() int { return int(peak.Load()) }
}

func orDefault(v, def string) string {
	if strings.TrimSpace(v) == "" {
		return def
	}
	return v
}
