// Command waemu-loadtest measures the emulator under many concurrent real
// whatsmeow clients: time to pair, time to log in, and the emulator's memory
// per connection.
//
//	go build -o /tmp/waemu ./cmd/waemu
//	go run ./cmd/waemu-loadtest -waemu /tmp/waemu -n 1000
//
// The emulator runs as a separate process so its memory is its own: the
// whatsmeow clients (each with goroutines, buffers and a store) live in this
// process. The run has two phases:
//
//  1. pair N devices by QR against emulator A (with -state), P at a time,
//     timing each from Connect to Connected; then disconnect them all and
//     stop A with SIGTERM (it saves its state);
//  2. start emulator B from that state (N devices, 0 connections), read its
//     RSS, log all N clients in again, P at a time, timing each, wait until B
//     reports N connections, let keepalives run, and read its RSS again.
//
// Memory per connection = (RSS with N connected − RSS with none) / N, from
// VmRSS in /proc/PID/status. Devices store their one-time prekeys in memory
// (waemutest): generating 812 prekeys per device is the client's cost and
// would dominate the pairing phase; everything else is whatsmeow's Postgres
// sqlstore in a fresh database that is dropped at the end.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib"
	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types/events"
	waLog "go.mau.fi/whatsmeow/util/log"

	"wasessions/internal/cli"
	"wasessions/internal/waemu/waemutest"
	"wasessions/internal/waendpoint"
)

// main: SIGINT or SIGTERM ends the run early, and the deferred clean-up
// (emulators stopped, database dropped) still runs.
func main() { cli.Main("waemu-loadtest", run) }

type config struct {
	waemu    string
	n        int
	parallel int
	adminDSN string
	settle   time.Duration
}

func run(ctx context.Context, args []string, _ func(string) string, out, stderr io.Writer) error {
	var cfg config
	fs := cli.FlagSet("waemu-loadtest", "usage: waemu-loadtest -waemu PATH [-n 1000] [-parallel 16] [-dsn URL] [-settle 35s]\n\nPairs and logs in N real whatsmeow clients against the emulator and reports\ntimings and the emulator's memory per connection.", stderr)
	fs.StringVar(&cfg.waemu, "waemu", "", "path to a built cmd/waemu binary (required)")
	fs.IntVar(&cfg.n, "n", 1000, "number of clients")
	fs.IntVar(&cfg.parallel, "parallel", 16, "pairings or logins in flight at once")
	fs.StringVar(&cfg.adminDSN, "dsn", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "admin DSN; a fresh database is created and dropped")
	fs.DurationVar(&cfg.settle, "settle", 35*time.Second, "how long the N connections idle before memory is read (whatsmeow pings every 20-30 s)")
	if err := cli.Parse(fs, args[1:], false); err != nil {
		return err
	}
	if cfg.waemu == "" {
		return cli.Usagef("-waemu is required (go build -o /tmp/waemu ./cmd/waemu)")
	}

	dsn, drop, err := createDatabase(ctx, cfg.adminDSN)
	if err != nil {
		return err
	}
	defer drop()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(32)
	container := sqlstore.NewWithDB(db, "postgres", nil)
	if err := container.Upgrade(ctx); err != nil {
		return fmt.Errorf("sqlstore upgrade: %w", err)
	}

	dir, err := os.MkdirTemp("", "waemu-load-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	seed := make([]byte, 32)
	rand.Read(seed)
	statePath := filepath.Join(dir, "state.json")

	// Phase 1: pairing.
	emuA, err := startEmu(cfg.waemu, statePath, seed)
	if err != nil {
		return err
	}
	ep := waendpoint.Endpoint{Addr: emuA.ready.Listen, RootKey: emuA.pubKey()}
	ep.InstallRootKey()
	pool := waemutest.NewPreKeyPool()
	logs := &countLog{}
	clients := make([]*loadClient, cfg.n)
	for i := range clients {
		clients[i] = newLoadClient(pool.NewDevice(container), logs)
		ep.Apply(clients[i].cli)
	}
	fmt.Fprintf(out, "phase 1: pairing %d clients, %d at a time\n", cfg.n, cfg.parallel)
	start := time.Now()
	pairTimes, err := each(clients, cfg.parallel, func(c *loadClient) error { return c.pair(ctx, emuA) })
	if err != nil {
		emuA.stop()
		return fmt.Errorf("pairing: %w", err)
	}
	pairWall := time.Since(start)
	if err := emuA.waitConnections(cfg.n); err != nil {
		emuA.stop()
		return err
	}
	for _, c := range clients {
		c.cli.Disconnect()
	}
	if err := emuA.waitConnections(0); err != nil {
		emuA.stop()
		return err
	}
	if err := emuA.stop(); err != nil {
		return fmt.Errorf("stop emulator A: %w", err)
	}

	// Phase 2: the same devices log in to a fresh emulator process.
	emuB, err := startEmu(cfg.waemu, statePath, seed)
	if err != nil {
		return err
	}
	defer emuB.stop()
	st, err := emuB.stats()
	if err != nil {
		return err
	}
	if st.Devices != cfg.n {
		return fmt.Errorf("emulator B loaded %d devices, want %d", st.Devices, cfg.n)
	}
	time.Sleep(2 * time.Second)
	rssBase, err := rss(emuB.cmd.Process.Pid)
	if err != nil {
		return err
	}
	ep = waendpoint.Endpoint{Addr: emuB.ready.Listen, RootKey: emuB.pubKey()}
	for _, c := range clients {
		ep.Apply(c.cli)
	}
	fmt.Fprintf(out, "phase 2: logging %d clients in, %d at a time\n", cfg.n, cfg.parallel)
	start = time.Now()
	loginTimes, err := each(clients, cfg.parallel, func(c *loadClient) error { return c.login() })
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	loginWall := time.Since(start)
	if err := emuB.waitConnections(cfg.n); err != nil {
		return err
	}
	time.Sleep(cfg.settle)
	st, err = emuB.stats()
	if err != nil {
		return err
	}
	rssN, err := rss(emuB.cmd.Process.Pid)
	if err != nil {
		return err
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)

	fmt.Fprintf(out, "\nclients                 %d (GOMAXPROCS %d)\n", cfg.n, runtime.GOMAXPROCS(0))
	fmt.Fprintf(out, "pair  (Connect→Connected) p50 %v  p95 %v  max %v  (all %d in %v, %d at a time)\n",
		pct(pairTimes, 50), pct(pairTimes, 95), pct(pairTimes, 100), cfg.n, pairWall.Round(time.Millisecond), cfg.parallel)
	fmt.Fprintf(out, "login (Connect→Connected) p50 %v  p95 %v  max %v  (all %d in %v, %d at a time)\n",
		pct(loginTimes, 50), pct(loginTimes, 95), pct(loginTimes, 100), cfg.n, loginWall.Round(time.Millisecond), cfg.parallel)
	fmt.Fprintf(out, "emulator connections    %d (logins %d, conflicts %d, keepalives %d)\n", st.Connections, st.Logins, st.Conflicts, st.Keepalives)
	fmt.Fprintf(out, "emulator RSS            %.1f MiB with 0 connections, %.1f MiB with %d\n", mib(rssBase), mib(rssN), st.Connections)
	fmt.Fprintf(out, "emulator memory/conn    %.1f KiB\n", float64(rssN-rssBase)/float64(st.Connections)/1024)
	fmt.Fprintf(out, "client process heap     %.1f MiB (%.1f KiB per whatsmeow client, for context)\n", mib(int64(ms.HeapInuse)), float64(ms.HeapInuse)/float64(cfg.n)/1024)
	fmt.Fprintf(out, "whatsmeow errors/warns  %d/%d\n", logs.errors.Load(), logs.warns.Load())
	for _, c := range clients {
		c.cli.Disconnect()
	}
	if st.Connections != int64(cfg.n) || st.Conflicts != 0 {
		return fmt.Errorf("expected %d connections and no conflicts, got %+v", cfg.n, st)
	}
	return nil
}

// each runs f over clients, parallel at a time, and returns each duration.
func each(clients []*loadClient, parallel int, f func(*loadClient) error) ([]time.Duration, error) {
	times := make([]time.Duration, len(clients))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i, c := range clients {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			start := time.Now()
			err := f(c)
			times[i] = time.Since(start)
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("client %d: %w", i, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return times, firstErr
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	if i < 1 {
		i = 1
	}
	return s[i-1].Round(100 * time.Microsecond)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// rss reads VmRSS (bytes) from /proc/PID/status.
func rss(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// loadClient is one whatsmeow client and its Connected notifications.
type loadClient struct {
	cli       *whatsmeow.Client
	connected chan struct{}
}

func newLoadClient(dev *store.Device, log waLog.Logger) *loadClient {
	c := &loadClient{cli: whatsmeow.NewClient(dev, log), connected: make(chan struct{}, 4)}
	c.cli.AddEventHandler(func(evt any) {
		if _, ok := evt.(*events.Connected); ok {
			select {
			case c.connected <- struct{}{}:
			default:
			}
		}
	})
	return c
}

func (c *loadClient) waitConnected() error {
	select {
	case <-c.connected:
		return nil
	case <-time.After(2 * time.Minute):
		return errors.New("no Connected event within 2 minutes")
	}
}

func (c *loadClient) pair(ctx context.Context, emu *emuProc) error {
	qr, err := c.cli.GetQRChannel(ctx)
	if err != nil {
		return err
	}
	if err := c.cli.Connect(); err != nil {
		return err
	}
	item := <-qr
	if item.Event != whatsmeow.QRChannelEventCode {
		return fmt.Errorf("QR channel: %+v", item)
	}
	if err := emu.scan(item.Code); err != nil {
		return err
	}
	return c.waitConnected()
}

func (c *loadClient) login() error {
	if err := c.cli.Connect(); err != nil {
		return err
	}
	return c.waitConnected()
}

// countLog counts whatsmeow's errors and warnings and prints the first few.
type countLog struct {
	errors, warns atomic.Int64
}

func (l *countLog) Errorf(msg string, args ...any) {
	if l.errors.Add(1) <= 5 {
		fmt.Fprintf(os.Stderr, "whatsmeow error: "+msg+"\n", args...)
	}
}

func (l *countLog) Warnf(msg string, args ...any) {
	if l.warns.Add(1) <= 5 {
		fmt.Fprintf(os.Stderr, "whatsmeow warning: "+msg+"\n", args...)
	}
}
func (l *countLog) Infof(string, ...any)    {}
func (l *countLog) Debugf(string, ...any)   {}
func (l *countLog) Sub(string) waLog.Logger { return l }

// emuProc is a running cmd/waemu process.
type emuProc struct {
	cmd   *exec.Cmd
	ready struct{ Listen, Control, PubKey string }
	done  chan error
}

func startEmu(bin, statePath string, seed []byte) (*emuProc, error) {
	cmd := exec.Command(bin, "-listen", "127.0.0.1:0", "-control", "127.0.0.1:0",
		"-state", statePath, "-key-seed", hex.EncodeToString(seed), "-log-level", "warn")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	e := &emuProc{cmd: cmd, done: make(chan error, 1)}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		return nil, fmt.Errorf("emulator ready line: %w", err)
	}
	if err := json.Unmarshal([]byte(line), &e.ready); err != nil {
		cmd.Process.Kill()
		return nil, fmt.Errorf("emulator ready line %q: %w", line, err)
	}
	go func() { io.Copy(io.Discard, stdout); e.done <- cmd.Wait() }()
	return e, nil
}

func (e *emuProc) pubKey() [32]byte {
	var k [32]byte
	b, _ := hex.DecodeString(e.ready.PubKey)
	copy(k[:], b)
	return k
}

// stop sends SIGTERM (the emulator saves its state) and waits.
func (e *emuProc) stop() error {
	if e.cmd.ProcessState != nil {
		return nil
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-e.done:
		return err
	case <-time.After(30 * time.Second):
		e.cmd.Process.Kill()
		return errors.New("emulator did not stop within 30 s of SIGTERM")
	}
}

type stats struct {
	Connections, Logins, Conflicts, Keepalives int64
	Devices                                    int
}

func (e *emuProc) stats() (stats, error) {
	var st stats
	resp, err := http.Get("http://" + e.ready.Control + "/stats")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func (e *emuProc) waitConnections(n int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := e.stats()
		if err != nil {
			return err
		}
		if st.Connections == int64(n) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("emulator has %d connections, want %d", st.Connections, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *emuProc) scan(qr string) error {
	body, _ := json.Marshal(map[string]string{"qr": qr})
	resp, err := http.Post("http://"+e.ready.Control+"/phone/scan", "application/json", strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("scan: %s: %s", resp.Status, msg)
	}
	return nil
}

// createDatabase makes a fresh database and returns its DSN and a drop func.
func createDatabase(ctx context.Context, adminDSN string) (string, func(), error) {
	admin, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return "", nil, fmt.Errorf("postgres: %w", err)
	}
	b := make([]byte, 6)
	rand.Read(b)
	name := "waemu_load_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		admin.Close(ctx)
		return "", nil, fmt.Errorf("create database: %w", err)
	}
	admin.Close(ctx)
	u, err := url.Parse(adminDSN)
	if err != nil {
		return "", nil, err
	}
	u.Path = "/" + name
	q := u.Query()
	q.Set("synchronous_commit", "off")
	u.RawQuery = q.Encode()
	drop := func() {
		c, err := pgx.Connect(context.Background(), adminDSN)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadtest: drop database:", err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			fmt.Fprintln(os.Stderr, "loadtest: drop database:", err)
		}
	}
	return u.String(), drop, nil
}
