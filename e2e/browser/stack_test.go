package browser

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"wasessions/internal/auth"
	"wasessions/internal/testenv"
)

// emuSeed fixes the emulator's root key, which the worker trusts through
// WA_SERVER_PUBKEY.
const emuSeed = "b0000000000000000000000000000000000000000000000000000000000000b1"

// proc is one program run as an OS process, its output in a log file.
type proc struct {
	name string
	bin  string
	args []string
	env  []string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // the exit status, once done is closed
}

// start runs bin with env, its stdout and stderr appended to dir/name.log.
func start(t *testing.T, dir, name, bin string, args, env []string) *proc {
	t.Helper()
	p := &proc{name: name, bin: bin, args: args, env: env, log: filepath.Join(dir, name+".log")}
	p.run(t)
	return p
}

// run starts the program (again).
func (p *proc) run(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("%s: log file: %v", p.name, err)
	}
	p.done, p.err = make(chan struct{}), nil
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Env = p.env
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // gone with the test process
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("%s: start: %v", p.name, err)
	}
	cmd, done := p.cmd, p.done
	go func() {
		err := cmd.Wait()
		f.Close()
		p.err = err
		close(done)
	}()
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to within, then kills.
func (p *proc) stop(t *testing.T, within time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(within):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop within %s of SIGTERM; killed", p.name, within)
	}
}

// tail is the last n lines of the log.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stack is the whole service and the emulator, on a fresh database and
// Redis database.
type stack struct {
	t        *testing.T
	dir      string
	redis    testenv.RedisDB
	dsn      string // the stack's database
	base     string // http://host:port of the api
	emu      string // http://host:port of the emulator's control API
	signer   *auth.Signer
	procs    []*proc
	http     *http.Client
	extraLog []string // other logs to show on failure (the browser's)
}

// newStack starts waemu (with emuArgs), api, worker and scheduler, and
// stops them when the test ends, printing the end of every log if it
// failed.
func newStack(t *testing.T, emuArgs ...string) *stack {
	t.Helper()
	s := &stack{t: t, dir: t.TempDir(), http: &http.Client{Timeout: 30 * time.Second}}
	dsn := testenv.NewDatabase(t)
	s.dsn = dsn
	s.redis = testenv.NewRedisDB(t)
	t.Cleanup(s.teardown) // runs before the database is dropped

	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	emuAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ctl := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	s.emu = "http://" + ctl
	s.run("waemu", append([]string{"-listen", emuAddr, "-control", ctl, "-key-seed", emuSeed}, emuArgs...), env)
	var pub struct {
		PubKey string `json:"pubkey"`
	}
	s.waitHTTP(t, "waemu", s.emu+"/pubkey", func(body []byte) bool {
		return json.Unmarshal(body, &pub) == nil && len(pub.PubKey) == 64
	})

	secret := randomHex(32)
	if s.signer, _ = auth.NewSigner(auth.Config{Secret: []byte(secret)}); s.signer == nil {
		t.Fatal("auth.NewSigner refused the secret")
	}
	apiAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	s.base = "http://" + apiAddr
	common := append(env,
		"DATABASE_URL="+dsn,
		"REDIS_URL="+s.redis.URL(),
		"JWT_SECRET="+secret,
		"LEASE_TTL=3s",
		"RESTORE_INTERVAL=1s",
		"SESSION_TTL=1h",
		"QR_WAIT=3s",
		"WA_SERVER_ADDR="+emuAddr,
		"WA_SERVER_PUBKEY="+pub.PubKey,
		"LOG_LEVEL=info",
	)
	// The api migrates the fresh database before the others start.
	s.run("api", nil, append(common, "HTTP_ADDR="+apiAddr))
	s.waitHTTP(t, "api", s.base+"/readyz", nil)
	metrics := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	s.run("worker", nil, append(common, "WORKER_ID=browser-w1", "METRICS_ADDR="+metrics))
	s.waitHTTP(t, "worker", "http://"+metrics+"/healthz", nil)
	s.run("scheduler", nil, append(common, "METRICS_ADDR="))
	return s
}

// proc is the program called name.
func (s *stack) proc(name string) *proc {
	for _, p := range s.procs {
		if p.name == name {
			return p
		}
	}
	panic("no program " + name + " in the stack")
}

// stopAPI stops the api (SIGTERM), as a deploy would; startAPI starts it
// again and waits until it is ready.
func (s *stack) stopAPI(t *testing.T) {
	t.Helper()
	api := s.proc("api")
	api.stop(t, 20*time.Second)
	if api.err != nil {
		t.Errorf("api exited with %v after SIGTERM", api.err)
	}
}

func (s *stack) startAPI(t *testing.T) {
	t.Helper()
	s.proc("api").run(t)
	s.waitHTTP(t, "api", s.base+"/readyz", nil)
}

func (s *stack) run(name string, args, env []string) {
	s.t.Helper()
	s.procs = append(s.procs, start(s.t, s.dir, name, filepath.Join(binDir, name), args, env))
}

// waitHTTP waits up to 60 s for url to answer 200 (and ok(body), if set),
// failing early if a program exits.
func (s *stack) waitHTTP(t *testing.T, what, url string, ok func([]byte) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		for _, p := range s.procs {
			if p.exited() {
				t.Fatalf("%s exited while waiting for %s: %v", p.name, what, p.err)
			}
		}
		resp, err := s.http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && (ok == nil || ok(body)) {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body))
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %s did not answer 200 within 60s; last: %s", what, url, last)
}

func (s *stack) teardown() {
	// The api first (it ends the page's event streams), the emulator last.
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].stop(s.t, 20*time.Second)
	}
	if s.t.Failed() {
		for _, p := range s.procs {
			s.t.Logf("--- end of %s's log (%s), exit %v:\n%s", p.name, p.name+".log", p.err, tail(p.log, 40))
		}
		for _, l := range s.extraLog {
			s.t.Logf("--- end of %s:\n%s", filepath.Base(l), tail(l, 40))
		}
	}
	for _, p := range s.procs {
		if p.name != "waemu" && p.err != nil {
			s.t.Errorf("%s exited with %v after SIGTERM (want a clean exit); its log ends:\n%s", p.name, p.err, tail(p.log, 20))
		}
	}
}

// token is a bearer token for userID, valid for an hour.
func (s *stack) token(t *testing.T, userID string) string {
	t.Helper()
	return s.tokenAs(t, userID, false)
}

// tokenAs is token, with role admin when admin is set.
func (s *stack) tokenAs(t *testing.T, userID string, admin bool) string {
	t.Helper()
	tok, err := s.signer.Sign(userID, admin, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// emuCall posts body to the emulator's control API and decodes the answer
// into out; any status but 200 is an error.
func (s *stack) emuCall(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.emu+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("emulator %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("emulator %s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("emulator %s %s: decode %q: %w", method, path, b, err)
		}
	}
	return nil
}

// devices lists the JIDs of the devices the emulator knows (linked).
func (s *stack) devices() ([]string, error) {
	var ds []struct {
		JID string `json:"jid"`
	}
	if err := s.emuCall("GET", "/devices", nil, &ds); err != nil {
		return nil, err
	}
	jids := make([]string, len(ds))
	for i, d := range ds {
		jids[i] = d.JID
	}
	return jids, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// newUserID is a random UUID (version 4).
func newUserID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
