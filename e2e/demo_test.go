package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"wasessions/e2e/harness"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
)

// TestDemoCtrlCStopsInOrder is what a new user does: `make demo` in a
// terminal, a session linked with scripts/demo-scan.sh, a second `make demo`
// (and a `make run`) while it runs, then Ctrl-C. Through a real
// pseudo-terminal, so Ctrl-C is the terminal's SIGINT to the whole
// foreground process group, as a user's is.
//
// Ctrl-C must stop everything quietly (no ERROR, no "make: ***"), exit 0 or
// by SIGINT, and in order: the worker first (it hands its session over
// while the emulator still runs, so it logs no error doing so), the
// emulator last. Before, every program got the SIGINT at once, the
// script's watchdog saw the emulator gone before its own trap ran, and the
// demo ended with "demo: ERROR: waemu exited" and "make: *** Error 1".
//
// The second `make demo` says the demo is already running, with its URL,
// and exits 0; a `make run` says the same and exits 1 (before, both failed
// on the taken port). After the Ctrl-C, `make demo` again says the linked
// session is back instead of asking for a scan.
//
// The scripts run the programs this suite built (BIN_DIR, with -race) in a
// RUN_DIR of the test's own, on its own ports, database and Redis DB.
func TestDemoCtrlCStopsInOrder(t *testing.T) {
	programs.Need(t)
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	runDir := t.TempDir()
	dsn := testenv.NewDatabase(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	addr := func() string { return fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)) }
	apiAddr, metricsAddr, emuAddr, ctlAddr := addr(), addr(), addr(), addr()
	env := append(harness.BaseEnv(),
		"RUN_DIR="+runDir, "BIN_DIR="+programs.Dir(),
		"DATABASE_URL="+dsn, "DB_NAME="+strings.TrimPrefix(u.Path, "/"),
		"REDIS_URL="+testenv.NewRedisDB(t).URL(),
		"HTTP_ADDR="+apiAddr, "METRICS_ADDR="+metricsAddr,
		"WAEMU_LISTEN="+emuAddr, "WAEMU_CONTROL="+ctlAddr,
		"TERM=dumb",
	)

	demo := exec.Command("make", "demo")
	demo.Dir, demo.Env = root, env
	term, err := pty.Start(demo)
	if err != nil {
		t.Fatalf("make demo in a pseudo-terminal: %v", err)
	}
	defer term.Close()
	var screen testfactory.LogBuffer
	go func() { _, _ = io.Copy(&screen, term) }()
	// exited is closed when make has exited, with its error in exitErr.
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = demo.Wait(); close(exited) }()
	t.Cleanup(func() {
		// A test that failed half-way: stop what runs (the script stops the
		// programs in order on SIGTERM), then report what the logs say.
		select {
		case <-exited:
		default:
			_ = syscall.Kill(-demo.Process.Pid, syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(90 * time.Second):
				_ = syscall.Kill(-demo.Process.Pid, syscall.SIGKILL)
			}
		}
		checkLogs(t, runDir)
		if t.Failed() {
			t.Logf("---- the terminal ----\n%s", screen.String())
		}
	})

	waitScreen := func(what string, within time.Duration) {
		t.Helper()
		if err := testfactory.Poll(within, 100*time.Millisecond, func() (bool, string) {
			select {
			case <-exited:
				t.Fatalf("make demo exited (%v) before %q", exitErr, what)
			default:
			}
			return strings.Contains(screen.String(), what), ""
		}); err != nil {
			t.Fatalf("the terminal never showed %q: %v", what, err)
		}
	}
	started := time.Now()
	waitScreen("wasessions demo is ready", 3*time.Minute)
	t.Logf("make demo ready after %s", time.Since(started).Round(time.Millisecond))

	// A second demo, and a make run, while this one runs.
	for _, tc := range []struct {
		script string
		exit   int
	}{{"scripts/demo.sh", 0}, {"scripts/run.sh", 1}} {
		second := exec.Command("bash", tc.script)
		second.Dir, second.Env = root, env
		out, err := second.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.exit || !strings.Contains(string(out), "make demo is already running") ||
			!strings.Contains(string(out), "http://"+apiAddr) || strings.Contains(string(out), "ERROR") {
			t.Fatalf("%s while make demo runs: exit %d (want %d), said:\n%s", tc.script, code, tc.exit, out)
		}
	}

	// The user links a session with the emulated phone.
	scan := exec.Command("bash", "scripts/demo-scan.sh")
	scan.Dir, scan.Env = root, env
	if out, err := scan.CombinedOutput(); err != nil || !strings.Contains(string(out), "connected") {
		t.Fatalf("scripts/demo-scan.sh: %v\n%s", err, out)
	}

	t.Logf("second runs answered and a session linked after %s", time.Since(started).Round(time.Millisecond))

	// Ctrl-C, as typed in the terminal.
	interrupted := time.Now()
	if _, err := term.Write([]byte{3}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(90 * time.Second):
		t.Fatal("make demo still runs 90 s after Ctrl-C")
	}
	t.Logf("make demo stopped %s after Ctrl-C: %v", time.Since(interrupted).Round(time.Millisecond), exitErr)
	var ee *exec.ExitError
	switch {
	case exitErr == nil:
	case errors.As(exitErr, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGINT:
	case errors.As(exitErr, &ee) && ee.ExitCode() == 130:
	default:
		t.Errorf("make demo after Ctrl-C: %v, want exit 0 or 130 (SIGINT)", exitErr)
	}
	// The terminal's last lines (what a user sees) without the pty's
	// carriage returns.
	text := strings.ReplaceAll(screen.String(), "\r", "")
	for _, bad := range []string{"ERROR", "make: ***", "exited"} {
		if strings.Contains(text, bad) {
			t.Errorf("the terminal shows %q after Ctrl-C:\n%s", bad, afterBanner(text))
		}
	}
	last := -1
	for _, name := range []string{"worker", "scheduler", "api", "waemu"} {
		i := strings.Index(text, "demo: stopped "+name+"\n")
		if i < 0 || i < last {
			t.Errorf("%s stopped out of order (want the worker first, the emulator last):\n%s", name, afterBanner(text))
		}
		last = i
	}
	for _, a := range []string{apiAddr, metricsAddr, emuAddr, ctlAddr} {
		if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still answers after Ctrl-C: a program was left running", a)
		}
	}
	checkWorkerHandedOver(t, runDir)
	checkLogs(t, runDir) // before the next run starts the logs anew

	// make demo again: the session comes back by itself, and the banner
	// says so instead of asking for a scan (before, it said "1. Create a
	// session... 2. Scan").
	again := exec.Command("bash", "scripts/demo.sh")
	again.Dir, again.Env = root, env
	var out testfactory.LogBuffer
	again.Stdout, again.Stderr = &out, &out
	if err := again.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- again.Wait() }()
	err = testfactory.Poll(3*time.Minute, 100*time.Millisecond, func() (bool, string) {
		return strings.Contains(out.String(), "wasessions demo is ready"), ""
	})
	_ = again.Process.Signal(syscall.SIGTERM) // the script stops the programs in order
	if werr := <-done; werr != nil && !strings.Contains(werr.Error(), "143") {
		t.Errorf("make demo again, stopped with SIGTERM: %v", werr)
	}
	if err != nil || !strings.Contains(out.String(), "Your session from the last run is back, linked as +15550001234") {
		t.Fatalf("the second make demo does not say the session is back (%v):\n%s", err, out.String())
	}
}

// checkWorkerHandedOver fails the test unless the worker's log in dir shows
// a hand-over and a clean stop with no warning or error after the hand-over
// began.
func checkWorkerHandedOver(t *testing.T, dir string) {
	t.Helper()
	worker, err := os.ReadFile(filepath.Join(dir, "worker.log"))
	if err != nil {
		t.Fatal(err)
	}
	handover := strings.Index(string(worker), "shutting down: handing sessions over")
	if handover < 0 || !strings.Contains(string(worker), `"msg":"worker stopped"`) {
		t.Fatalf("the worker did not hand over and stop cleanly:\n%s", worker)
	}
	for _, line := range strings.Split(string(worker[handover:]), "\n") {
		if strings.Contains(line, `"level":"ERROR"`) || strings.Contains(line, `"level":"WARN"`) {
			t.Errorf("the worker complained while handing over (was the emulator stopped first?): %s", line)
		}
	}
}

// checkLogs fails the test on a data race report in any program's log
// under dir (the scripts' RUN_DIR).
func checkLogs(t *testing.T, dir string) {
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, l := range logs {
		for _, r := range harness.RaceReports(l) {
			t.Errorf("%s reported a data race:\n%s", filepath.Base(l), r)
		}
		if t.Failed() {
			t.Logf("---- last lines of %s ----\n%s", l, harness.TailFile(l, 40))
		}
	}
}

// afterBanner is the terminal's text from the demo's last banner line on:
// what it printed while stopping.
func afterBanner(text string) string {
	if i := strings.LastIndex(text, "Stop "); i >= 0 {
		return text[i:]
	}
	return text
}
