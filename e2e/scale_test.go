//go:build scale

package e2e

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"wasessions/e2e/harness"
	"wasessions/internal/testenv"
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
	scaleIdle     = flag.Int("scale.heartbeats", 3, "heartbeat periods to measure idle hosting over (0: no idle figures)")
	scaleProfile  = flag.String("scale.profile", "", "`dir` to write CPU profiles of every worker and the emulator during the restore into, the workers' mutex and block profiles after it, and each worker's CPU profile over the idle periods measured (turns on METRICS_PPROF and the emulator's -pprof)")
	scaleProfFor  = flag.Duration("scale.profile-for", 15*time.Second, "how long the restore's CPU profiles run (from each worker's /healthz; the emulator's from the workers' start)")
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
	emuArgs := []string{"-state", ""}
	var emuPprof string
	if *scaleProfile != "" {
		if err := os.MkdirAll(*scaleProfile, 0o755); err != nil {
			t.Fatal(err)
		}
		env["METRICS_PPROF"] = "true"
		env["METRICS_TOKEN"] = harness.RandomHex(16)
		emuPprof = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		emuArgs = append(emuArgs, "-pprof", emuPprof)
	}
	s := newStack(t, stackOpts{Workers: ids, Env: env, EmuArgs: emuArgs})
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
		before := s.EmuStats()
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
		statements := s.pgStatements(12)
		cpuBefore := s.cpuTimes() // the workers are gone: theirs counts from 0
		start = time.Now()
		// The restore's timeline: each worker's start -> /healthz (its
		// migrations checked, asynq serving, restores beginning), then
		// the first, half, 90 % and all sessions back.
		var profiles sync.WaitGroup
		if emuPprof != "" {
			profiles.Add(1)
			go func() {
				defer profiles.Done()
				s.cpuProfile("waemu", "http://"+emuPprof, "")
			}()
		}
		healthy := make([]time.Duration, len(ids))
		for i, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.StartWorker(id)
				healthy[i] = time.Since(start)
				if *scaleProfile != "" {
					profiles.Add(1)
					go func() {
						defer profiles.Done()
						s.cpuProfile("worker-"+id, "http://"+s.MetricsAddr[id], s.MetricsToken)
					}()
				}
			}()
		}
		wg.Wait()
		marks := []struct {
			name string
			at   int
			took time.Duration
		}{{"first", 1, 0}, {"half", (n + 1) / 2, 0}, {"90%", (9*n + 9) / 10, 0}, {"all", n, 0}}
		var back atomic.Int64
		stopProgress := s.progress("back", n, func() int { return int(back.Load()) })
		if err := testenv.Poll(10*time.Minute, 100*time.Millisecond, func() (bool, string) {
			per, err := s.ConnectedPerWorker(sids, epochs)
			if err != nil {
				return false, err.Error()
			}
			c := harness.Total(per)
			back.Store(int64(c))
			for i := range marks {
				if marks[i].took == 0 && c >= marks[i].at {
					marks[i].took = time.Since(start)
				}
			}
			return c == n, fmt.Sprintf("%d connected under a new lease", c)
		}); err != nil {
			t.Fatalf("waiting for all %d sessions connected again: %v", n, err)
		}
		took = time.Since(start)
		statements("from the kill to all back")
		stopProgress()
		s.waitAllConnected(sids, 5*time.Minute)
		after := s.EmuStats()
		t.Logf("FIGURE restore after %s of %d worker(s): start of the workers -> all %d sessions connected under live leases: %s (RESTORE_CONCURRENCY %s)",
			map[string]string{"kill": "SIGKILL", "restart": "SIGTERM"}[*scaleFault], nw, n, took.Round(time.Millisecond), orDefault(env["RESTORE_CONCURRENCY"], "4"))
		line := "FIGURE restore timeline from the workers' start:"
		for i, id := range ids {
			line += fmt.Sprintf(" %s /healthz %s,", id, healthy[i].Round(time.Millisecond))
		}
		for _, m := range marks {
			line += fmt.Sprintf(" %s back (%d) %s,", m.name, m.at, m.took.Round(time.Millisecond))
		}
		t.Logf("%s logins during the restore %d (%d for each session), conflicts %d", strings.TrimSuffix(line, ","),
			after.Logins-before.Logins, n, after.Conflicts-before.Conflicts)
		cpuAfter := s.cpuTimes()
		t.Logf("FIGURE CPU from the kill to all back (%s of wall time, 2 cores = %.1f s): workers %.2f s, emulator %.2f s, Postgres backends of the stack %.2f s",
			took.Round(time.Millisecond), 2*took.Seconds(), cpuAfter.workers-cpuBefore.workers, cpuAfter.emu-cpuBefore.emu, cpuAfter.since(cpuBefore.postgres))
		for _, id := range ids {
			s.logRestorePhases(id)
		}
		profiles.Wait()
		if *scaleProfile != "" {
			for _, id := range ids {
				for _, kind := range []string{"mutex", "block"} {
					s.workerProfile(id, kind)
				}
			}
		}
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
	if *scaleIdle == 0 {
		return
	}
	period := *scaleLeaseTTL / 3
	// Let the last connects and their first heartbeat settle.
	time.Sleep(period)
	first := map[string]procSample{}
	for _, id := range ids {
		first[id] = s.sample(id)
	}
	// With -scale.profile, a CPU profile of each worker over the
	// measured periods: where idle hosting's CPU goes.
	var profiles sync.WaitGroup
	if *scaleProfile != "" {
		for _, id := range ids {
			profiles.Add(1)
			go func() {
				defer profiles.Done()
				s.cpuProfileFor("idle-"+strings.ReplaceAll(phase, " ", "-")+"-worker-"+id, "http://"+s.MetricsAddr[id], s.MetricsToken,
					time.Duration(*scaleIdle)*period-time.Second)
			}()
		}
	}
	time.Sleep(time.Duration(*scaleIdle) * period)
	profiles.Wait()
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

// stackCPU is CPU time (user + system, seconds) used so far: by the
// running workers, the emulator, and each Postgres backend of the stack's
// database.
type stackCPU struct {
	workers, emu float64
	postgres     map[int]float64
}

// since is the CPU the backends used after earlier was read: all of a
// backend started since, the difference for one that was there.
func (c stackCPU) since(earlier map[int]float64) float64 {
	var sum float64
	for pid, v := range c.postgres {
		sum += v - earlier[pid]
	}
	return sum
}

func (s *stack) cpuTimes() stackCPU {
	s.T.Helper()
	c := stackCPU{postgres: map[int]float64{}}
	for _, id := range s.WorkerIDs {
		if pid := s.Workers[id].Pid(); pid != 0 {
			c.workers += procCPU(pid)
		}
	}
	c.emu = procCPU(s.Emu.Pid())
	rows, err := s.DB.Pool().Query(context.Background(), `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database() AND backend_type = 'client backend'`)
	if err != nil {
		s.T.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			s.T.Fatal(err)
		}
		c.postgres[pid] = procCPU(pid)
	}
	if err := rows.Err(); err != nil {
		s.T.Fatal(err)
	}
	return c
}

// procCPU is a process's user + system CPU seconds (0 once it is gone).
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which ends with the last ')':
	// the first is the line's 3rd (state), utime is the 14th, stime the 15th.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc's CPU times (100 on Linux).
const clockTicks = 100

// logRestorePhases logs where worker id's restores spent their time on
// average (wasessions_worker_restore_phase_seconds).
func (s *stack) logRestorePhases(id string) {
	const m = "wasessions_worker_restore_phase_seconds"
	line := fmt.Sprintf("FIGURE restore phases of %s, mean per restore:", id)
	var total float64
	for _, phase := range []string{"wait", "jitter", "claim", "handshake", "login", "mark"} {
		label := fmt.Sprintf("phase=%q", phase)
		sum, count := s.metricWhere(id, m+"_sum", label), s.metricWhere(id, m+"_count", label)
		if count == 0 {
			continue
		}
		total += sum / count
		line += fmt.Sprintf(" %s %.1f ms,", phase, 1000*sum/count)
	}
	s.T.Logf("%s total %.1f ms (%.0f restores)", line, 1000*total, s.metricWhere(id, m+"_count", `phase="mark"`))
}

// workerProfile writes worker id's cumulative profile kind (mutex, block:
// sampled since its start, see cmd/worker) to
// <-scale.profile>/worker-<id>.<kind>.pprof.
func (s *stack) workerProfile(id, kind string) {
	code, body := s.WorkerGetRaw(id, "/debug/pprof/"+kind)
	if code != http.StatusOK {
		s.T.Errorf("%s profile of %s: %d %.200q", kind, id, code, body)
		return
	}
	path := filepath.Join(*scaleProfile, "worker-"+id+"."+kind+".pprof")
	if err := os.WriteFile(path, body, 0o644); err != nil {
		s.T.Error(err)
		return
	}
	s.T.Logf("%s profile of %s: %s", kind, id, path)
}

// cpuProfile writes a CPU profile of -scale.profile-for from the
// profiler at base (a worker's METRICS_ADDR with its token, or the
// emulator's -pprof) to <-scale.profile>/<name>.cpu.pprof.
func (s *stack) cpuProfile(name, base, token string) {
	s.cpuProfileFor(name, base, token, *scaleProfFor)
}

// cpuProfileFor is cpuProfile over d.
func (s *stack) cpuProfileFor(name, base, token string, d time.Duration) {
	secs := max(int(d.Seconds()), 1)
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, secs), nil)
	if err != nil {
		s.T.Error(err)
		return
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: d + time.Minute}).Do(req)
	if err != nil {
		s.T.Errorf("CPU profile of %s: %v", name, err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		s.T.Errorf("CPU profile of %s: %d %v %.200q", name, resp.StatusCode, err, b)
		return
	}
	path := filepath.Join(*scaleProfile, name+".cpu.pprof")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		s.T.Error(err)
		return
	}
	s.T.Logf("CPU profile of %s over %d s: %s", name, secs, path)
}

func orDefault(v, def string) string {
	if strings.TrimSpace(v) == "" {
		return def
	}
	return v
}

// pgStatements reports, when the cluster loads pg_stat_statements, which
// statements of the stack's database cost Postgres the most between the
// returned function's call and the call of the function it returns: their
// calls, and their planning and execution time in all and per call. A
// restore costs Postgres more than it costs the workers, and a backend's
// CPU time alone does not say which statement it went to. Without the
// extension it logs how to load it and reports nothing.
func (s *stack) pgStatements(top int) (stop func(what string)) {
	s.T.Helper()
	ctx := context.Background()
	pool := s.DB.Pool()
	var loaded bool
	if err := pool.QueryRow(ctx, `SELECT 'pg_stat_statements' = ANY(string_to_array(current_setting('shared_preload_libraries'), ', '))`).Scan(&loaded); err != nil {
		s.T.Fatal(err)
	}
	if !loaded {
		s.T.Logf("no statement figures: the cluster does not load pg_stat_statements (ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements', restart)")
		return func(string) {}
	}
	if _, err := pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		s.T.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0)`); err != nil {
		s.T.Fatal(err)
	}
	return func(what string) {
		s.T.Helper()
		rows, err := pool.Query(ctx, `SELECT calls, total_plan_time, total_exec_time, rows,
				regexp_replace(query, '\s+', ' ', 'g')
			FROM pg_stat_statements
			WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
			ORDER BY total_plan_time + total_exec_time DESC`)
		if err != nil {
			s.T.Fatal(err)
		}
		defer rows.Close()
		type stmt struct {
			calls, rows int64
			plan, exec  float64
			query       string
		}
		var all []stmt
		var sum float64
		for rows.Next() {
			var st stmt
			if err := rows.Scan(&st.calls, &st.plan, &st.exec, &st.rows, &st.query); err != nil {
				s.T.Fatal(err)
			}
			all = append(all, st)
			sum += st.plan + st.exec
		}
		if err := rows.Err(); err != nil {
			s.T.Fatal(err)
		}
		s.T.Logf("FIGURE Postgres statements %s: %d kinds, %.0f ms of planning and execution in all; the %d largest:", what, len(all), sum, top)
		for i, st := range all {
			if i == top {
				break
			}
			q := st.query
			if len(q) > 160 {
				q = q[:160] + "…"
			}
			s.T.Logf("  %5.1f%% %8.0f ms  %7d calls  %6.3f ms/call (plan %.3f)  %7d rows  %s",
				100*(st.plan+st.exec)/sum, st.plan+st.exec, st.calls, (st.plan+st.exec)/float64(st.calls),
				st.plan/float64(st.calls), st.rows, q)
		}
	}
}
