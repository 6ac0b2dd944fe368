package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"wasessions/internal/auth"
	"wasessions/internal/store"
	"wasessions/internal/testenv"
)

// Timings the stacks run with: short leases and reconcile periods so that
// failover happens in seconds (the minimums config.Validate accepts).
const (
	leaseTTL        = 3 * time.Second
	restoreInterval = 1 * time.Second
	// waitLong bounds waits for things that take a moment (a link, a
	// restore of many sessions on a busy 2-core machine).
	waitLong = 60 * time.Second
)

// emuSeed is the emulator's key seed in every stack (its root key is what
// the workers trust through WA_SERVER_PUBKEY).
const emuSeed = "e2e0000000000000000000000000000000000000000000000000000000000001"

// stackOpts shape one test's stack.
type stackOpts struct {
	// workers are the WORKER_IDs to start (default one, "w1").
	workers []string
	// noScheduler leaves the scheduler out.
	noScheduler bool
	// emuArgs are extra emulator flags (e.g. -qr-timeout).
	emuArgs []string
	// env overrides variables of api, workers and scheduler.
	env map[string]string
	// workerEnv adds variables of one worker (by id), over env.
	workerEnv map[string]map[string]string
	// later are workers (among workers) that newStack does not start; the
	// test starts them with startWorker.
	later []string
	// pg and redis are private servers to use instead of the shared ones.
	pg    *testenv.PostgresServer
	redis *testenv.RedisServer
	// sentinel, when set, is the Redis the programs reach through
	// Sentinel (REDIS_SENTINEL_*), database 0 of its private servers.
	sentinel *testenv.SentinelGroup
	// dsn, when set, is the database to use (e.g. a multi-host DSN of a
	// primary and its standby) instead of a fresh one.
	dsn string
}

// stack is one running deployment: the emulator, api, workers and
// scheduler, on a database and a Redis database of their own.
type stack struct {
	t        *testing.T
	dir      string
	dsn      string
	redisURL string

	emu     *proc
	emuAddr string
	phone   *emuClient
	pubkey  string

	api     *proc
	apiAddr string
	client  *apiClient

	workerIDs   []string
	workers     map[string]*proc
	metricsAddr map[string]string
	sched       *proc

	db *store.Store
}

// newStack starts a stack and stops it when the test ends, checking on the
// way out that the emulator counted no conflict and no program reported a
// data race or died on its own.
func newStack(t *testing.T, o stackOpts) *stack {
	t.Helper()
	needPrograms(t)
	if len(o.workers) == 0 {
		o.workers = []string{"w1"}
	}
	dir, err := os.MkdirTemp("", "wasessions-e2e-"+strings.ReplaceAll(t.Name(), "/", "_")+"-")
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, dir: dir, workers: map[string]*proc{}, metricsAddr: map[string]string{}}

	// Stores: the shared servers (a fresh database and Redis DB), or the
	// test's private ones.
	switch {
	case o.dsn != "":
		s.dsn = o.dsn
	case o.pg != nil:
		s.dsn = o.pg.NewDatabase(t)
	default:
		s.dsn = testenv.NewDatabase(t)
	}
	switch {
	case o.sentinel != nil:
		s.redisURL = o.sentinel.Settings(0).URL
	case o.redis != nil:
		s.redisURL = o.redis.URL()
	default:
		s.redisURL = testenv.NewRedisDB(t).URL()
	}
	t.Cleanup(s.teardown) // before the database is dropped (cleanups run last first)

	// The emulator: WhatsApp and the user's phone.
	s.emuAddr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ctl := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	args := append([]string{"-listen", s.emuAddr, "-control", ctl, "-key-seed", emuSeed,
		"-state", filepath.Join(dir, "waemu-state.json")}, o.emuArgs...)
	s.emu = newProc(t, dir, "waemu", binPath("waemu"), args, baseEnv())
	s.phone = &emuClient{base: "http://" + ctl, http: &http.Client{Timeout: 60 * time.Second}}
	s.emu.start()
	s.waitFor("the emulator's control API", waitLong, func() (bool, string) {
		k, err := s.phone.pubkey()
		s.pubkey = k
		return err == nil && len(k) == 64, fmt.Sprint(err)
	})

	// Configuration shared by the three programs.
	secret := randomHex(24)
	common := map[string]string{
		"DATABASE_URL":     s.dsn,
		"REDIS_URL":        s.redisURL,
		"JWT_SECRET":       secret,
		"LEASE_TTL":        leaseTTL.String(),
		"RESTORE_INTERVAL": restoreInterval.String(),
		"SESSION_TTL":      "1h",
		"QR_WAIT":          "5s",
		"WA_SERVER_ADDR":   s.emuAddr,
		"WA_SERVER_PUBKEY": s.pubkey,
		"WA_VERSION_URL":   "http://" + ctl + "/web", // never the internet
		"LOG_LEVEL":        "info",
		"DB_MAX_CONNS":     "10",
	}
	if o.sentinel != nil {
		for k, v := range o.sentinel.Env(0) {
			common[k] = v
		}
	}
	for k, v := range o.env {
		common[k] = v
	}
	envOf := func(extra map[string]string) []string {
		env := baseEnv()
		keys := make([]string, 0, len(common))
		for k := range common {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if _, over := extra[k]; !over {
				env = append(env, k+"="+common[k])
			}
		}
		for k, v := range extra {
			env = append(env, k+"="+v)
		}
		return env
	}

	s.apiAddr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	s.api = newProc(t, dir, "api", binPath("api"), nil, envOf(map[string]string{"HTTP_ADDR": s.apiAddr}))
	signer, err := auth.NewSigner(auth.Config{Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	s.client = &apiClient{base: "http://" + s.apiAddr, http: &http.Client{Timeout: 60 * time.Second}, signer: signer}

	for _, id := range o.workers {
		addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		s.workerIDs = append(s.workerIDs, id)
		s.metricsAddr[id] = addr
		extra := map[string]string{"WORKER_ID": id, "METRICS_ADDR": addr}
		for k, v := range o.workerEnv[id] {
			extra[k] = v
		}
		s.workers[id] = newProc(t, dir, "worker-"+id, binPath("worker"), nil, envOf(extra))
	}
	if !o.noScheduler {
		s.sched = newProc(t, dir, "scheduler", binPath("scheduler"), nil, envOf(nil))
	}

	// The api migrates the fresh database first; the others start after.
	s.startAPI()
	pool, err := pgxpool.New(context.Background(), s.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s.db = store.New(pool)
	for _, id := range s.workerIDs {
		if !slices.Contains(o.later, id) {
			s.startWorker(id)
		}
	}
	if s.sched != nil {
		s.startScheduler()
	}
	return s
}

// baseEnv is what every program inherits: no configuration variable of the
// developer's shell leaks into a test.
func baseEnv() []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "GORACE=halt_on_error=0"}
	if v := os.Getenv("TMPDIR"); v != "" {
		env = append(env, "TMPDIR="+v)
	}
	return env
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// startAPI starts the api and waits until /readyz answers 200.
func (s *stack) startAPI() {
	s.t.Helper()
	s.api.start()
	s.waitFor("api /readyz", waitLong, func() (bool, string) {
		code, body := httpGet(s.client.http, s.client.base+"/readyz")
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
}

// startWorker starts worker id and waits until it serves /healthz (its
// migrations are done and its asynq server runs).
func (s *stack) startWorker(id string) {
	s.t.Helper()
	w := s.workers[id]
	w.start()
	s.waitFor("worker "+id+" /healthz", waitLong, func() (bool, string) {
		if !w.running() {
			s.t.Fatalf("worker %s exited during start:\n%s", id, w.tail(30))
		}
		code, body := httpGet(s.client.http, "http://"+s.metricsAddr[id]+"/healthz")
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
}

// startScheduler starts the scheduler and waits for its first line.
func (s *stack) startScheduler() {
	s.t.Helper()
	s.sched.start()
	s.waitFor("scheduler started", waitLong, func() (bool, string) {
		return s.sched.loggedSinceStart(`"scheduler started"`), ""
	})
}

// programs are the service's processes (not the emulator).
func (s *stack) programs() []*proc {
	var ps []*proc
	if s.api != nil {
		ps = append(ps, s.api)
	}
	for _, id := range s.workerIDs {
		ps = append(ps, s.workers[id])
	}
	if s.sched != nil {
		ps = append(ps, s.sched)
	}
	return ps
}

// all is every process, the emulator included.
func (s *stack) all() []*proc {
	ps := s.programs()
	if s.emu != nil {
		ps = append(ps, s.emu)
	}
	return ps
}

// stopAll sends SIGTERM to every program at once and waits for clean exits.
func (s *stack) stopAll() {
	s.t.Helper()
	var wg sync.WaitGroup
	for _, p := range s.programs() {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop(45 * time.Second) }()
	}
	wg.Wait()
}

// killAll sends SIGKILL to every program at once.
func (s *stack) killAll() {
	for _, p := range s.programs() {
		p.signal(syscall.SIGKILL)
	}
	for _, p := range s.programs() {
		p.kill()
	}
}

// startAll starts every program again, api first, and waits until each is
// ready.
func (s *stack) startAll() {
	s.t.Helper()
	s.startAPI()
	var wg sync.WaitGroup
	for _, id := range s.workerIDs {
		wg.Add(1)
		go func() { defer wg.Done(); s.startWorker(id) }()
	}
	wg.Wait()
	if s.sched != nil {
		s.startScheduler()
	}
}

// teardown stops everything and reports what must never happen.
func (s *stack) teardown() {
	t := s.t
	if s.emu != nil && s.emu.running() {
		if st, err := s.phone.stats(); err != nil {
			t.Errorf("emulator stats at the end: %v", err)
		} else if st.Conflicts != 0 {
			t.Errorf("the emulator counted %d conflicts (a login replacing a live connection of the same device): two clients for one device", st.Conflicts)
		} else {
			t.Logf("emulator at the end: %+v", st)
		}
	}
	var wg sync.WaitGroup
	for _, p := range s.programs() {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop(45 * time.Second) }()
	}
	wg.Wait()
	if s.emu != nil {
		s.emu.stop(15 * time.Second)
	}

	for _, p := range s.all() {
		for _, r := range p.raceReports() {
			t.Errorf("%s reported a data race:\n%s", p.name, r)
		}
		for _, u := range p.unexpectedExits() {
			t.Errorf("%s", u)
		}
	}
	if t.Failed() {
		for _, p := range s.all() {
			t.Logf("---- last lines of %s (%s) ----\n%s", p.name, p.log, p.tail(60))
		}
	}
	if os.Getenv("E2E_KEEP_LOGS") != "" || t.Failed() {
		t.Logf("program logs kept in %s", s.dir)
		return
	}
	os.RemoveAll(s.dir)
}

// waitFor polls cond every 25 ms until it holds; after within the test
// fails, naming what it waited for and cond's last description.
func (s *stack) waitFor(what string, within time.Duration, cond func() (bool, string)) {
	s.t.Helper()
	if err := poll(within, 25*time.Millisecond, cond); err != nil {
		s.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// poll is waitFor without the test: an error after within.
func poll(within, every time.Duration, cond func() (bool, string)) error {
	deadline := time.Now().Add(within)
	var last string
	for {
		ok, desc := cond()
		if ok {
			return nil
		}
		last = desc
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s; last: %s", within, last)
		}
		time.Sleep(every)
	}
}

func httpGet(c *http.Client, url string) (int, string) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// hosted is the worker's wasessions_worker_hosted_sessions gauge.
func (s *stack) hosted(id string) (int, error) {
	v, err := s.metricE(id, "wasessions_worker_hosted_sessions")
	return int(v), err
}

// metricE is the sum of every series of a metric the worker serves (0 when
// it has none yet).
func (s *stack) metricE(id, name string) (float64, error) {
	code, body := httpGet(s.client.http, "http://"+s.metricsAddr[id]+"/metrics")
	if code != http.StatusOK {
		return 0, fmt.Errorf("worker %s /metrics: %d %s", id, code, body)
	}
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndex(rest, "}")+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("worker %s: %s: %q: %w", id, name, line, err)
		}
		sum += v
	}
	return sum, nil
}

// metric is metricE for the test goroutine.
func (s *stack) metric(id, name string) float64 {
	s.t.Helper()
	v, err := s.metricE(id, name)
	if err != nil {
		s.t.Fatal(err)
	}
	return v
}

// row reads a session straight from Postgres (the API does not show the
// lease).
func (s *stack) row(sessionID string) store.Session {
	s.t.Helper()
	r, err := s.db.Get(context.Background(), sessionID)
	if err != nil {
		s.t.Fatalf("read session %s: %v", sessionID, err)
	}
	return r
}

// keysExist reports whether whatsmeow's device row (and so every key that
// cascades from it) is in Postgres.
func (s *stack) keysExist(jid string) bool {
	s.t.Helper()
	ok, err := s.db.DeviceExists(context.Background(), jid)
	if err != nil {
		s.t.Fatalf("device keys of %s: %v", jid, err)
	}
	return ok
}

// stats reads the emulator's counters, failing the test if it cannot.
func (s *stack) emuStats() emuStats {
	s.t.Helper()
	st, err := s.phone.stats()
	if err != nil {
		s.t.Fatal(err)
	}
	return st
}
