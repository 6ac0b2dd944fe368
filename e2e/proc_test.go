package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is one program run as an OS process, its stdout and stderr going to
// a log file. A proc can be started again after it stopped (same binary,
// arguments and environment), as a restarted deployment would be.
type proc struct {
	t    *testing.T
	name string // e.g. "worker-w1"; also the log file's name
	bin  string
	args []string
	env  []string
	log  string // path of the log file (appended to across restarts)

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when the current run has exited
	exitErr  error
	expected bool // the current run's exit was asked for (stop/kill)
	// unexpected records runs that ended without being asked to.
	unexpected []string
	starts     int
	// startOffset is the log's size when the current run started.
	startOffset int64
}

func newProc(t *testing.T, dir, name, bin string, args, env []string) *proc {
	return &proc{t: t, name: name, bin: bin, args: args, env: env, log: filepath.Join(dir, name+".log")}
}

// start runs the program. It fails the test if it is already running.
func (p *proc) start() {
	p.t.Helper()
	p.startRun(false)
}

// runToExit runs a program expected to exit by itself (a refusal to
// start) and returns how it exited, or fails the test if it still runs
// after within (it is then killed).
func (p *proc) runToExit(within time.Duration) error {
	p.t.Helper()
	p.startRun(true)
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
	case <-time.After(within):
		p.kill()
		p.t.Fatalf("%s still ran %s after it started; killed", p.name, within)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

func (p *proc) startRun(expectExit bool) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		p.t.Fatalf("%s: start while running", p.name)
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatalf("%s: log file: %v", p.name, err)
	}
	p.starts++
	if fi, err := f.Stat(); err == nil {
		p.startOffset = fi.Size()
	}
	fmt.Fprintf(f, "=== e2e: start #%d of %s at %s\n", p.starts, p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = f, f
	// Killed with the test process if it dies first (Linux).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		p.t.Fatalf("%s: start: %v", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.expected, p.exitErr = cmd, done, expectExit, nil
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.exitErr = err
		if !p.expected {
			p.unexpected = append(p.unexpected, fmt.Sprintf("%s (pid %d) exited on its own: %v", p.name, cmd.Process.Pid, err))
		}
		if p.cmd == cmd {
			p.cmd = nil
		}
		p.mu.Unlock()
		close(done)
	}()
}

// running reports whether the program runs now.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// pid of the current run (0 if not running).
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// signal sends sig to the current run and marks its exit as expected. It
// returns a channel closed when the run has exited (closed already if it was
// not running).
func (p *proc) signal(sig syscall.Signal) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	p.expected = true
	_ = p.cmd.Process.Signal(sig)
	return p.done
}

// stop sends SIGTERM and waits for a clean exit (code 0) for up to within;
// after that the process is killed and the test fails.
func (p *proc) stop(within time.Duration) {
	p.t.Helper()
	p.waitExit(p.signal(syscall.SIGTERM), within)
}

// waitExit waits for a run asked to stop (done is what signal returned) to
// exit cleanly; after within it is killed and the test fails.
func (p *proc) waitExit(done <-chan struct{}, within time.Duration) {
	p.t.Helper()
	select {
	case <-done:
	case <-time.After(within):
		p.signal(syscall.SIGKILL)
		<-done
		p.t.Errorf("%s did not stop within %s of SIGTERM; killed", p.name, within)
		return
	}
	p.mu.Lock()
	err := p.exitErr
	p.mu.Unlock()
	if err != nil {
		p.t.Errorf("%s exited with %v after SIGTERM (want a clean exit)", p.name, err)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	<-p.signal(syscall.SIGKILL)
}

// rssKiB is the resident set size of the running process (VmRSS).
func (p *proc) rssKiB() (int, error) {
	pid := p.pid()
	if pid == 0 {
		return 0, errors.New(p.name + " is not running")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				return strconv.Atoi(f[0])
			}
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// logText is everything the program logged so far.
func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// logContains reports whether any log line contains s.
func (p *proc) logContains(s string) bool {
	return strings.Contains(p.logText(), s)
}

// loggedSinceStart reports whether the current (or last) run logged s.
func (p *proc) loggedSinceStart(s string) bool {
	p.mu.Lock()
	off := p.startOffset
	p.mu.Unlock()
	b, _ := os.ReadFile(p.log)
	if int64(len(b)) < off {
		return false
	}
	return strings.Contains(string(b[off:]), s)
}

// tail is the last n lines of the log.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// raceReports are the data race reports in the log, each cut to its first
// lines.
func (p *proc) raceReports() []string {
	f, err := os.Open(p.log)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var cur []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.Contains(line, "WARNING: DATA RACE"):
			cur = []string{line}
		case cur != nil && strings.HasPrefix(line, "=================="):
			out = append(out, strings.Join(cur, "\n"))
			cur = nil
		case cur != nil && len(cur) < 60:
			cur = append(cur, line)
		}
	}
	if cur != nil {
		out = append(out, strings.Join(cur, "\n"))
	}
	return out
}

// unexpectedExits lists the runs that ended without being asked to.
func (p *proc) unexpectedExits() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.unexpected...)
}

// setenv changes a variable for the next start.
func (p *proc) setenv(key, value string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, kv := range p.env {
		if strings.HasPrefix(kv, key+"=") {
			p.env[i] = key + "=" + value
			return
		}
	}
	p.env = append(p.env, key+"="+value)
}
