package harness

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
	"wasessions/internal/testfactory"
)

// Timings the stacks run with: short leases and reconcile periods so that
// failover happens in seconds (the minimums config.Validate accepts).
const (
	LeaseTTL        = 3 * time.Second
	RestoreInterval = 1 * time.Second
	// WaitLong bounds waits for things that take a moment (a link, a
	// restore of many sessions on a busy 2-core machine).
	WaitLong = 60 * time.Second
)

// emuSeed is the emulator's key seed in every Stack (its root key is what
// the workers trust through WA_SERVER_PUBKEY).
const emuSeed = "e2e0000000000000000000000000000000000000000000000000000000000001"

// Options shape one test's Stack.
type Options struct {
	// Binaries are the programs to run (the suite's RunTests hands them).
	Binaries *Binaries
	// Workers are the WORKER_IDs to start (default one, "w1").
	Workers []string
	// NoScheduler leaves the scheduler out.
	NoScheduler bool
	// EmuArgs are extra emulator flags (e.g. -qr-timeout).
	EmuArgs []string
	// Env overrides variables of api, workers and scheduler.
	Env map[string]string
	// WorkerEnv adds variables of one worker (by id), over Env.
	WorkerEnv map[string]map[string]string
	// Later are workers (among Workers) that New does not start; the test
	// starts them with StartWorker.
	Later []string
	// PG and Redis are private servers to use instead of the shared ones.
	PG    *testenv.PostgresServer
	Redis *testenv.RedisServer
	// Sentinel, when set, is the Redis the programs reach through
	// Sentinel (REDIS_SENTINEL_*), database 0 of its private servers.
	Sentinel *testenv.SentinelGroup
	// DSN, when set, is the database to use (e.g. a multi-host DSN of a
	// primary and its standby) instead of a fresh one.
	DSN string
}

// Stack is one running deployment: the emulator, api, workers and
// scheduler, on a database and a Redis database of their own.
type Stack struct {
	T   *testing.T
	bin *Binaries
	// Dir holds the programs' logs (kept when the test fails or with
	// E2E_KEEP_LOGS set) and the emulator's state file.
	Dir      string
	DSN      string
	RedisURL string

	Emu     *Proc
	EmuAddr string
	// Phone drives the emulator's control API: the user's phone and
	// WhatsApp's view of the devices.
	Phone  *Emulator
	PubKey string

	API     *Proc
	APIAddr string
	// APIBase is http://host:port of the api; HTTP is the client the
	// harness calls it (and the workers' /metrics) with.
	APIBase string
	HTTP    *http.Client
	// Signer signs tokens with the stack's JWT_SECRET.
	Signer *auth.Signer

	WorkerIDs   []string
	Workers     map[string]*Proc
	MetricsAddr map[string]string
	// MetricsToken is the workers' METRICS_TOKEN, when the test set one.
	MetricsToken string
	Sched        *Proc

	// DB is the stack's database, for reading what the API does not show.
	DB *store.Store

	// extraLogs are other files whose end is shown when the test fails
	// (ShowOnFailure).
	extraLogs []string
}

// New starts a Stack and stops it when the test ends, checking on the way
// out that the emulator counted no conflict, no program reported a data
// race or died on its own, and every program stopped cleanly on SIGTERM.
func New(t *testing.T, o Options) *Stack {
	t.Helper()
	if o.Binaries == nil {
		t.Fatal("harness: Options.Binaries is not set (the suite's TestMain gets them from RunTests)")
	}
	o.Binaries.Need(t)
	if len(o.Workers) == 0 {
		o.Workers = []string{"w1"}
	}
	dir, err := os.MkdirTemp("", "wasessions-e2e-"+strings.ReplaceAll(t.Name(), "/", "_")+"-")
	if err != nil {
		t.Fatal(err)
	}
	s := &Stack{T: t, bin: o.Binaries, Dir: dir, Workers: map[string]*Proc{}, MetricsAddr: map[string]string{}}

	// Stores: the shared servers (a fresh database and Redis DB), or the
	// test's private ones.
	switch {
	case o.DSN != "":
		s.DSN = o.DSN
	case o.PG != nil:
		s.DSN = o.PG.NewDatabase(t)
	default:
		s.DSN = testenv.NewDatabase(t)
	}
	switch {
	case o.Sentinel != nil:
		s.RedisURL = o.Sentinel.Settings(0).URL
	case o.Redis != nil:
		s.RedisURL = o.Redis.URL()
	default:
		s.RedisURL = testenv.NewRedisDB(t).URL()
	}
	t.Cleanup(s.teardown) // before the database is dropped (cleanups run last first)

	// The emulator: WhatsApp and the user's phone.
	s.EmuAddr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ctl := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	args := append([]string{"-listen", s.EmuAddr, "-control", ctl, "-key-seed", emuSeed,
		"-state", filepath.Join(dir, "waemu-state.json")}, o.EmuArgs...)
	s.Emu = NewProc(t, dir, "waemu", s.bin.Path("waemu"), args, BaseEnv())
	s.Phone = &Emulator{Base: "http://" + ctl, HTTP: &http.Client{Timeout: 60 * time.Second}}
	s.Emu.Start()
	s.WaitFor("the emulator's control API", WaitLong, func() (bool, string) {
		k, err := s.Phone.PubKey()
		s.PubKey = k
		return err == nil && len(k) == 64, fmt.Sprint(err)
	})

	// Configuration shared by the three programs.
	secret := RandomHex(24)
	common := map[string]string{
		"DATABASE_URL":     s.DSN,
		"REDIS_URL":        s.RedisURL,
		"JWT_SECRET":       secret,
		"LEASE_TTL":        LeaseTTL.String(),
		"RESTORE_INTERVAL": RestoreInterval.String(),
		"SESSION_TTL":      "1h",
		"QR_WAIT":          "5s",
		"WA_SERVER_ADDR":   s.EmuAddr,
		"WA_SERVER_PUBKEY": s.PubKey,
		"WA_VERSION_URL":   "http://" + ctl + "/web", // never the internet
		"LOG_LEVEL":        "info",
		"DB_MAX_CONNS":     "10",
	}
	if o.Sentinel != nil {
		for k, v := range o.Sentinel.Env(0) {
			common[k] = v
		}
	}
	for k, v := range o.Env {
		common[k] = v
	}
	s.MetricsToken = common["METRICS_TOKEN"]
	envOf := func(extra map[string]string) []string {
		env := BaseEnv()
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

	s.APIAddr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	s.API = NewProc(t, dir, "api", s.bin.Path("api"), nil, envOf(map[string]string{"HTTP_ADDR": s.APIAddr}))
	signer, err := auth.NewSigner(auth.Config{Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	s.APIBase, s.HTTP, s.Signer = "http://"+s.APIAddr, &http.Client{Timeout: 60 * time.Second}, signer

	for _, id := range o.Workers {
		addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		s.WorkerIDs = append(s.WorkerIDs, id)
		s.MetricsAddr[id] = addr
		extra := map[string]string{"WORKER_ID": id, "METRICS_ADDR": addr}
		for k, v := range o.WorkerEnv[id] {
			extra[k] = v
		}
		s.Workers[id] = NewProc(t, dir, "worker-"+id, s.bin.Path("worker"), nil, envOf(extra))
	}
	if !o.NoScheduler {
		s.Sched = NewProc(t, dir, "scheduler", s.bin.Path("scheduler"), nil, envOf(nil))
	}

	// The api migrates the fresh database first; the others start after.
	s.StartAPI()
	pool, err := pgxpool.New(context.Background(), s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s.DB = store.New(pool)
	for _, id := range s.WorkerIDs {
		if !slices.Contains(o.Later, id) {
			s.StartWorker(id)
		}
	}
	if s.Sched != nil {
		s.StartScheduler()
	}
	return s
}

// BaseEnv is what every program inherits: no configuration variable of the
// developer's shell leaks into a test.
func BaseEnv() []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "GORACE=halt_on_error=0"}
	if v := os.Getenv("TMPDIR"); v != "" {
		env = append(env, "TMPDIR="+v)
	}
	return env
}

// RandomHex is n random bytes in hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// StartAPI starts the api and waits until /readyz answers 200.
func (s *Stack) StartAPI() {
	s.T.Helper()
	s.API.Start()
	s.WaitFor("api /readyz", WaitLong, func() (bool, string) {
		code, body := HTTPGet(s.HTTP, s.APIBase+"/readyz")
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
}

// StartWorker starts worker id and waits until it serves /healthz (its
// migrations are done and its asynq server runs).
func (s *Stack) StartWorker(id string) {
	s.T.Helper()
	w := s.Workers[id]
	w.Start()
	s.WaitFor("worker "+id+" /healthz", WaitLong, func() (bool, string) {
		if !w.Running() {
			s.T.Fatalf("worker %s exited during start:\n%s", id, w.Tail(30))
		}
		code, body := HTTPGet(s.HTTP, "http://"+s.MetricsAddr[id]+"/healthz")
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
}

// StartScheduler starts the scheduler and waits for its first line.
func (s *Stack) StartScheduler() {
	s.T.Helper()
	s.Sched.Start()
	s.WaitFor("scheduler started", WaitLong, func() (bool, string) {
		return s.Sched.LoggedSinceStart(`"scheduler started"`), ""
	})
}

// Programs are the service's processes (not the emulator).
func (s *Stack) Programs() []*Proc {
	var ps []*Proc
	if s.API != nil {
		ps = append(ps, s.API)
	}
	for _, id := range s.WorkerIDs {
		ps = append(ps, s.Workers[id])
	}
	if s.Sched != nil {
		ps = append(ps, s.Sched)
	}
	return ps
}

// All is every process, the emulator included.
func (s *Stack) All() []*Proc {
	ps := s.Programs()
	if s.Emu != nil {
		ps = append(ps, s.Emu)
	}
	return ps
}

// StopAll sends SIGTERM to every program at once and waits for clean exits.
func (s *Stack) StopAll() {
	s.T.Helper()
	var wg sync.WaitGroup
	for _, p := range s.Programs() {
		wg.Add(1)
		go func() { defer wg.Done(); p.Stop(45 * time.Second) }()
	}
	wg.Wait()
}

// KillAll sends SIGKILL to every program at once.
func (s *Stack) KillAll() {
	for _, p := range s.Programs() {
		p.Signal(syscall.SIGKILL)
	}
	for _, p := range s.Programs() {
		p.Kill()
	}
}

// StartAll starts every program again, api first, and waits until each is
// ready.
func (s *Stack) StartAll() {
	s.T.Helper()
	s.StartAPI()
	var wg sync.WaitGroup
	for _, id := range s.WorkerIDs {
		wg.Add(1)
		go func() { defer wg.Done(); s.StartWorker(id) }()
	}
	wg.Wait()
	if s.Sched != nil {
		s.StartScheduler()
	}
}

// ShowOnFailure adds a file (another program's log, e.g. the browser's) to
// those whose end the teardown prints when the test fails.
func (s *Stack) ShowOnFailure(path string) { s.extraLogs = append(s.extraLogs, path) }

// Token is a bearer token for user (role admin when admin is set), valid
// for an hour.
func (s *Stack) Token(user string, admin bool) string {
	tok, err := s.Signer.Sign(user, admin, time.Hour)
	if err != nil {
		panic(err) // a malformed user id is a bug in the test
	}
	return tok
}

// ConnectedPerWorker counts, per worker, the sessions among ids that
// Postgres shows connected under a live lease. With after (one lease epoch
// per id, as read earlier), only leases taken since count: the sessions
// that reconnected.
//
// It reads every connected row of the test's database (which holds only
// the test's sessions) and picks ids here: with ids in the statement, as a
// join with unnest(ids, epochs) or as session_id = ANY(ids), Postgres
// compared each row with the whole list, and at 2,000 sessions a poll cost
// it 0.2 – 1 s (pg_stat_statements in make scale), more than the restore
// it was watching.
func (s *Stack) ConnectedPerWorker(ids []string, after []int64) (map[string]int, error) {
	rows, err := s.DB.Pool().Query(context.Background(), `SELECT session_id, worker_id, lease_epoch FROM whatsapp_sessions
		WHERE status = 'connected' AND is_connected AND worker_id IS NOT NULL AND lease_until > now()`)
	if err != nil {
		return nil, fmt.Errorf("connected sessions per worker: %w", err)
	}
	defer rows.Close()
	since := make(map[string]int64, len(ids))
	for i, id := range ids {
		since[id] = -1
		if after != nil {
			since[id] = after[i]
		}
	}
	out := map[string]int{}
	for rows.Next() {
		var id, w string
		var epoch int64
		if err := rows.Scan(&id, &w, &epoch); err != nil {
			return nil, fmt.Errorf("connected sessions per worker: %w", err)
		}
		if e, ok := since[id]; ok && epoch > e {
			out[w]++
		}
	}
	return out, rows.Err()
}

// Total is the sum of a count per worker.
func Total(perWorker map[string]int) int {
	n := 0
	for _, v := range perWorker {
		n += v
	}
	return n
}

// teardown stops everything and reports what must never happen.
func (s *Stack) teardown() {
	t := s.T
	if s.Emu != nil && s.Emu.Running() {
		if st, err := s.Phone.Stats(); err != nil {
			t.Errorf("emulator stats at the end: %v", err)
		} else if st.Conflicts != 0 {
			t.Errorf("the emulator counted %d conflicts (a login replacing a live connection of the same device): two clients for one device", st.Conflicts)
		} else {
			t.Logf("emulator at the end: %+v", st)
		}
	}
	s.StopAll()
	if s.Emu != nil {
		s.Emu.Stop(15 * time.Second)
	}

	for _, p := range s.All() {
		for _, r := range p.RaceReports() {
			t.Errorf("%s reported a data race:\n%s", p.Name, r)
		}
		for _, u := range p.UnexpectedExits() {
			t.Errorf("%s", u)
		}
	}
	if t.Failed() {
		for _, p := range s.All() {
			t.Logf("---- last lines of %s (%s) ----\n%s", p.Name, p.Log, p.Tail(60))
		}
		for _, l := range s.extraLogs {
			t.Logf("---- last lines of %s ----\n%s", l, TailFile(l, 60))
		}
	}
	if os.Getenv("E2E_KEEP_LOGS") != "" || t.Failed() {
		t.Logf("program logs kept in %s", s.Dir)
		return
	}
	os.RemoveAll(s.Dir)
}

// WaitFor is testfactory.WaitFor for the stack's test.
func (s *Stack) WaitFor(what string, within time.Duration, cond func() (bool, string)) {
	s.T.Helper()
	testfactory.WaitFor(s.T, what, within, cond)
}

// HTTPGet is the status and body (or the error) of a GET of url.
func HTTPGet(c *http.Client, url string) (int, string) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// WorkerGet GETs path from worker id's METRICS_ADDR, with the stack's
// METRICS_TOKEN when it has one.
func (s *Stack) WorkerGet(id, path string) (int, string) {
	code, b := s.WorkerGetRaw(id, path)
	return code, strings.TrimSpace(string(b))
}

// WorkerGetRaw is WorkerGet with the body as sent (a profile).
func (s *Stack) WorkerGetRaw(id, path string) (int, []byte) {
	req, err := http.NewRequest(http.MethodGet, "http://"+s.MetricsAddr[id]+path, nil)
	if err != nil {
		return 0, []byte(err.Error())
	}
	if s.MetricsToken != "" {
		req.Header.Set("Authorization", "Bearer "+s.MetricsToken)
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, b
}

// Hosted is the worker's wasessions_worker_hosted_sessions gauge.
func (s *Stack) Hosted(id string) (int, error) {
	v, err := s.MetricE(id, "wasessions_worker_hosted_sessions")
	return int(v), err
}

// MetricE is the sum of every series of a metric the worker serves (0 when
// it has none yet).
func (s *Stack) MetricE(id, name string) (float64, error) {
	code, body := s.WorkerGet(id, "/metrics")
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

// Metric is metricE for the test goroutine.
func (s *Stack) Metric(id, name string) float64 {
	s.T.Helper()
	v, err := s.MetricE(id, name)
	if err != nil {
		s.T.Fatal(err)
	}
	return v
}

// Row reads a session straight from Postgres (the API does not show the
// lease).
func (s *Stack) Row(sessionID string) store.Session {
	s.T.Helper()
	r, err := s.DB.Get(context.Background(), sessionID)
	if err != nil {
		s.T.Fatalf("read session %s: %v", sessionID, err)
	}
	return r
}

// KeysExist reports whether whatsmeow's device row (and so every key that
// cascades from it) is in Postgres.
func (s *Stack) KeysExist(jid string) bool {
	s.T.Helper()
	ok, err := s.DB.DeviceExists(context.Background(), jid)
	if err != nil {
		s.T.Fatalf("device keys of %s: %v", jid, err)
	}
	return ok
}

// EmuStats reads the emulator's counters, failing the test if it cannot.
func (s *Stack) EmuStats() EmuStats {
	s.T.Helper()
	st, err := s.Phone.Stats()
	if err != nil {
		s.T.Fatal(err)
	}
	return st
}
