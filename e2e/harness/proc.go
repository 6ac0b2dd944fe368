package harness

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

// Proc is one program run as an OS process, its stdout and stderr going to
// a log file. A Proc can be started again after it stopped (same binary,
// arguments and environment), as a restarted deployment would be.
type Proc struct {
	t *testing.T
	// Name is e.g. "worker-w1"; also the log file's name.
	Name string
	// Log is the path of the log file (appended to across restarts).
	Log  string
	bin  string
	args []string
	env  []string

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

// NewProc is the program bin, run with args and env (nothing else of the
// test's environment), logging to dir/name.log. It does not start it.
func NewProc(t *testing.T, dir, name, bin string, args, env []string) *Proc {
	return &Proc{t: t, Name: name, bin: bin, args: args, env: env, Log: filepath.Join(dir, name+".log")}
}

// Start runs the program. It fails the test if it is already running.
func (p *Proc) Start() {
	p.t.Helper()
	p.startRun(false)
}

// RunToExit runs a program expected to exit by itself (a refusal to
// start) and returns how it exited, or fails the test if it still runs
// after within (it is then killed).
func (p *Proc) RunToExit(within time.Duration) error {
	p.t.Helper()
	p.startRun(true)
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
	case <-time.After(within):
		p.Kill()
		p.t.Fatalf("%s still ran %s after it started; killed", p.Name, within)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

func (p *Proc) startRun(expectExit bool) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		p.t.Fatalf("%s: start while running", p.Name)
	}
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatalf("%s: log file: %v", p.Name, err)
	}
	p.starts++
	if fi, err := f.Stat(); err == nil {
		p.startOffset = fi.Size()
	}
	fmt.Fprintf(f, "=== e2e: start #%d of %s at %s\n", p.starts, p.Name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = f, f
	// Killed with the test process if it dies first (Linux).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		p.t.Fatalf("%s: start: %v", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.expected, p.exitErr = cmd, done, expectExit, nil
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.exitErr = err
		if !p.expected {
			p.unexpected = append(p.unexpected, fmt.Sprintf("%s (pid %d) exited on its own: %v", p.Name, cmd.Process.Pid, err))
		}
		if p.cmd == cmd {
			p.cmd = nil
		}
		p.mu.Unlock()
		close(done)
	}()
}

// Running reports whether the program runs now.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// Pid of the current run (0 if not running).
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Signal sends sig to the current run and marks its exit as expected. It
// returns a channel closed when the run has exited (closed already if it was
// not running).
func (p *Proc) Signal(sig syscall.Signal) <-chan struct{} {
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

// Stop sends SIGTERM and waits for a clean exit (code 0) for up to within;
// after that the process is killed and the test fails.
func (p *Proc) Stop(within time.Duration) {
	p.t.Helper()
	p.WaitExit(p.Signal(syscall.SIGTERM), within)
}

// WaitExit waits for a run asked to stop (done is what signal returned) to
// exit cleanly; after within it is killed and the test fails.
func (p *Proc) WaitExit(done <-chan struct{}, within time.Duration) {
	p.t.Helper()
	select {
	case <-done:
	case <-time.After(within):
		p.Signal(syscall.SIGKILL)
		<-done
		p.t.Errorf("%s did not stop within %s of SIGTERM; killed", p.Name, within)
		return
	}
	p.mu.Lock()
	err := p.exitErr
	p.mu.Unlock()
	if err != nil {
		p.t.Errorf("%s exited with %v after SIGTERM (want a clean exit)", p.Name, err)
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill() {
	<-p.Signal(syscall.SIGKILL)
}

// RSSKiB is the resident set size of the running process (VmRSS).
func (p *Proc) RSSKiB() (int, error) {
	pid := p.Pid()
	if pid == 0 {
		return 0, errors.New(p.Name + " is not running")
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
	return 0, errors.New("no VmRSS in /Proc status")
}

// LogText is everything the program logged so far.
func (p *Proc) LogText() string {
	b, _ := os.ReadFile(p.Log)
	return string(b)
}

// LogContains reports whether any log line contains s.
func (p *Proc) LogContains(s string) bool {
	return strings.Contains(p.LogText(), s)
}

// LoggedSinceStart reports whether the current (or last) run logged s.
func (p *Proc) LoggedSinceStart(s string) bool {
	p.mu.Lock()
	off := p.startOffset
	p.mu.Unlock()
	b, _ := os.ReadFile(p.Log)
	if int64(len(b)) < off {
		return false
	}
	return strings.Contains(string(b[off:]), s)
}

// Tail is the last n lines of the log.
func (p *Proc) Tail(n int) string { return TailFile(p.Log, n) }

// TailFile is the last n lines of the file at path.
func TailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// RaceReports are the data race reports in the log.
func (p *Proc) RaceReports() []string { return RaceReports(p.Log) }

// RaceReports are the data race reports in the log file at path, each cut
// to its first lines.
func RaceReports(path string) []string {
	f, err := os.Open(path)
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

// ExitErr is how the last run exited (nil for a clean exit, and while it
// runs).
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// UnexpectedExits lists the runs that ended without being asked to.
func (p *Proc) UnexpectedExits() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.unexpected...)
}

// Env is a copy of the environment the next start runs with.
func (p *Proc) Env() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.env...)
}

// Setenv changes a variable for the next start.
func (p *Proc) Setenv(key, value string) {
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
