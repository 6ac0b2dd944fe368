package waemu_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types/events"
	waLog "go.mau.fi/whatsmeow/util/log"

	"wasessions/internal/testenv"
	"wasessions/internal/waemu"
	"wasessions/internal/waendpoint"
)

// testSeed is the key seed of every emulator in this test process: whatsmeow
// trusts one root key per process (WACertPubKey).
var testSeed = []byte("waemu test seed: one root key per test process")

// waitTimeout bounds every wait for a client event. It is a deadline, not a
// speed claim: after pairing, whatsmeow generates and stores 812 prekeys
// before it reports Connected, which under -race on a loaded 2-core machine
// has taken longer than 30 s.
const waitTimeout = 90 * time.Second

func TestMain(m *testing.M) {
	// Keepalives every ~1 s instead of 20-30 s, so tests see them answered.
	whatsmeow.KeepAliveIntervalMin = 700 * time.Millisecond
	whatsmeow.KeepAliveIntervalMax = 1200 * time.Millisecond
	waendpoint.Endpoint{Addr: "unused:1", RootKey: waemu.RootPubKey(testSeed)}.InstallRootKey()
	os.Exit(m.Run())
}

// startEmu starts an emulator on free loopback ports, closed at test end.
func startEmu(t testing.TB, opts waemu.Options) *waemu.Server {
	t.Helper()
	if opts.ListenAddr == "" {
		opts.ListenAddr = "127.0.0.1:0"
	}
	if opts.KeySeed == nil {
		opts.KeySeed = testSeed
	}
	if opts.Logger == nil {
		w := &testWriter{t: t}
		// Registered before Close's cleanup, so it runs after it.
		t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
		level := slog.LevelInfo
		if _, bench := t.(*testing.B); bench {
			level = slog.LevelWarn
		}
		opts.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
	}
	emu, err := waemu.Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(func() {
		if err := emu.Close(); err != nil {
			t.Errorf("close emulator: %v", err)
		}
	})
	return emu
}

// testWriter sends emulator logs to the test log while the test runs.
type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Logf("emu: %s", strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// newContainer is whatsmeow's Postgres store in a fresh database.
func newContainer(t testing.TB) *sqlstore.Container {
	t.Helper()
	dsn := testenv.NewDatabase(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("synchronous_commit", "off") // thousands of prekey inserts per pairing
	u.RawQuery = q.Encode()
	db, err := sql.Open("pgx", u.String())
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(16)
	t.Cleanup(func() { db.Close() })
	container := sqlstore.NewWithDB(db, "postgres", nil)
	if err := container.Upgrade(context.Background()); err != nil {
		t.Fatalf("whatsmeow sqlstore upgrade: %v", err)
	}
	return container
}

// client is a real whatsmeow client pointed at an emulator, recording its
// events and its error and warning logs.
type client struct {
	*whatsmeow.Client
	t   testing.TB
	emu *waemu.Server
	log *recLog
	// jid is the device's JID when the test knows it (a stored device, or
	// one paired through pairQR): Disconnect's barrier needs it, and
	// whatsmeow's Store.ID may be cleared concurrently by a logout.
	jid string

	mu     sync.Mutex
	events []any
	notify chan struct{}
}

func newClient(t testing.TB, emu *waemu.Server, dev *store.Device) *client {
	t.Helper()
	c := &client{t: t, emu: emu, log: &recLog{}, notify: make(chan struct{}, 1)}
	if dev.ID != nil {
		c.jid = dev.ID.String()
	}
	c.Client = whatsmeow.NewClient(dev, c.log)
	// Acks at the end of each node's handling, in whatsmeow's handler
	// goroutine, rather than from a goroutine each: that is what lets
	// Disconnect wait for them (Server.Barrier).
	c.SynchronousAck = true
	waendpoint.Endpoint{Addr: emu.Addr(), RootKey: emu.PubKey()}.Apply(c.Client)
	c.AddEventHandler(func(evt any) {
		if serverCloses(evt) {
			c.log.mark(&c.log.sock.closing)
		}
		c.mu.Lock()
		c.events = append(c.events, evt)
		c.mu.Unlock()
		select {
		case c.notify <- struct{}{}:
		default:
		}
	})
	t.Cleanup(func() {
		c.Disconnect()
		if t.Failed() {
			for _, l := range c.log.lines() {
				t.Logf("whatsmeow: %s", l)
			}
		}
	})
	return c
}

// Disconnect is whatsmeow's Disconnect, first letting a close the server
// started finish. whatsmeow closes a socket from two sides that share no
// lock: the read pump, once the server has closed the connection, reads
// FrameSocket.OnDisconnect (framesocket.go, Close) while Disconnect clears
// it (noisesocket.go, Stop). A test that disconnects, or ends, right after
// the emulator closed the client's socket (an unlink, a replaced stream, a
// refused login) would hit that data race inside whatsmeow. Waiting until
// whatsmeow has handled the server's close (its onDisconnect ran, so the
// socket is gone and Disconnect does not touch it) leaves only one side.
//
// A client still logged in first waits for the emulator's barrier: every
// node the emulator sent it handled and acked. An ack being written while
// Disconnect closes the socket is the same kind of race inside whatsmeow
// (FrameSocket.SendFrame reads the connection that Close clears), seen in
// CI when a test ended right after a receipt or a notification arrived.
func (c *client) Disconnect() {
	c.t.Helper()
	if err := c.log.awaitServerClose(waitTimeout); err != nil {
		c.t.Errorf("%v; events: %s", err, c.describe())
	}
	if c.jid != "" && c.IsLoggedIn() {
		// Bounded short: a test may have left the client's handler stuck
		// on purpose (a crash simulated in the handler).
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.emu.Barrier(ctx, c.jid); err != nil && !errors.Is(err, waemu.ErrClientGone) {
			c.t.Logf("barrier before disconnect of %s: %v", c.jid, err)
		}
		cancel()
	}
	c.log.mark(&c.log.sock.own)
	c.Client.Disconnect()
}

// serverCloses reports events after which the server closes the client's
// socket (and whatsmeow does not reconnect by itself).
func serverCloses(evt any) bool {
	switch evt.(type) {
	case *events.LoggedOut, *events.StreamReplaced, *events.TemporaryBan, *events.ClientOutdated:
		return true
	case *events.ConnectFailure:
		return true
	}
	return false
}

// count returns how many recorded events match.
func (c *client) count(match func(any) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, e := range c.events {
		if match(e) {
			n++
		}
	}
	return n
}

// waitN waits until n recorded events match and returns the n-th.
func (c *client) waitN(what string, n int, match func(any) bool) any {
	c.t.Helper()
	e, err := c.waitNErr(what, n, match)
	if err != nil {
		c.t.Fatal(err)
	}
	return e
}

func (c *client) wait(what string, match func(any) bool) any {
	c.t.Helper()
	return c.waitN(what, 1, match)
}

// waitNErr is waitN for goroutines other than the test's.
func (c *client) waitNErr(what string, n int, match func(any) bool) (any, error) {
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		seen := 0
		for _, e := range c.events {
			if match(e) {
				seen++
				if seen == n {
					c.mu.Unlock()
					return e, nil
				}
			}
		}
		c.mu.Unlock()
		select {
		case <-c.notify:
		case <-time.After(50 * time.Millisecond):
		case <-deadline.C:
			return nil, fmt.Errorf("timed out waiting for %s (#%d); events: %s", what, n, c.describe())
		}
	}
}

func (c *client) describe() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, e := range c.events {
		fmt.Fprintf(&b, "%T ", e)
	}
	return b.String()
}

// assertHealthy fails the test if whatsmeow logged an error or warning.
func (c *client) assertHealthy() {
	c.t.Helper()
	if bad := c.log.problems(); len(bad) > 0 {
		c.t.Fatalf("whatsmeow logged %d errors/warnings:\n%s", len(bad), strings.Join(bad, "\n"))
	}
}

func isConnected(e any) bool { _, ok := e.(*events.Connected); return ok }
func isDisconnected(e any) bool {
	_, ok := e.(*events.Disconnected)
	return ok
}
func isPairSuccess(e any) bool { _, ok := e.(*events.PairSuccess); return ok }
func isStreamReplaced(e any) bool {
	_, ok := e.(*events.StreamReplaced)
	return ok
}
func isLoggedOut(e any) bool { _, ok := e.(*events.LoggedOut); return ok }

// recLog is a waLog.Logger that keeps every line and flags errors and
// warnings.
type recLog struct {
	module string
	root   *recLog
	mu     sync.Mutex
	all    []string
	bad    []string
	sock   sockSeq // on the root only, under mu
}

// sockSeq orders what happened to the client's sockets: each field is the
// sequence number (seq) of the last time it happened, 0 for never.
type sockSeq struct {
	seq     int
	cur     any // the newest socket (whatsmeow's *socket.FrameSocket)
	start   int // its read pump started (a connection was made)
	exit    int // its read pump exited (the connection is closed)
	remote  int // a read pump saw the connection closed under it (by the server)
	handled int // whatsmeow's onDisconnect ran for a connection the server closed
	closing int // an event after which the server closes the connection
	own     int // the test called Disconnect
}

// whatsmeow's lines (format strings) that mark socket transitions.
const (
	logPumpStart = "Frame websocket read pump starting"
	logPumpExit  = "Frame websocket read pump exiting"
	// logged by the read pump when a read fails on a socket whatsmeow
	// did not close itself
	logReadFailed = "Error reading from websocket"
)

// onDisconnectLogs are the lines client.onDisconnect logs, under its
// socket lock, once it has dropped the closed socket.
var onDisconnectLogs = []string{"Emitting Disconnected event", "OnDisconnect() called", "Ignoring OnDisconnect"}

// mark records that the transition *field happened now.
func (l *recLog) mark(field *int) {
	r := l.rootLog()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sock.seq++
	*field = r.sock.seq
}

// awaitServerClose waits until no close by the server is in progress on
// the newest socket: one the server closed (its read pump saw the close,
// or an event said the server would close it) without the test's
// Disconnect must have been handled by whatsmeow's onDisconnect. A socket
// whatsmeow closed itself (a QR timeout, Logout, the 515 reconnect) needs
// no wait: its close does not run onDisconnect.
func (l *recLog) awaitServerClose(timeout time.Duration) error {
	r := l.rootLog()
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		s := r.sock
		r.mu.Unlock()
		closing := s.start > 0 && s.own < s.start && (s.remote > s.start || s.closing > s.start)
		if !closing || s.remote > s.start && s.handled > s.remote {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("whatsmeow did not finish the server's close of its socket within %s (%+v)", timeout, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (l *recLog) rootLog() *recLog {
	if l.root != nil {
		return l.root
	}
	return l
}

func (l *recLog) add(level, msg string, args []any) {
	r := l.rootLog()
	line := fmt.Sprintf("%s [%s] %s", level, l.module, fmt.Sprintf(msg, args...))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, line)
	if (level == "ERROR" || level == "WARN") && !benign(line) {
		r.bad = append(r.bad, line)
	}
}

// benign reports whatsmeow warnings that come from the client alone: its
// keepalive loop can fire while the client closes its own socket (after a
// 515 restart or Disconnect) and then fails to write on it. The emulator
// cannot cause or prevent that; the short test keepalive interval makes it
// show up now and then among 200 clients.
func benign(line string) bool {
	return strings.Contains(line, "Failed to send keepalive") && strings.Contains(line, "use of closed network connection")
}

func (l *recLog) Errorf(msg string, args ...any) {
	if strings.HasPrefix(msg, logReadFailed) {
		l.mark(&l.rootLog().sock.remote)
	}
	l.add("ERROR", msg, args)
}
func (l *recLog) Warnf(msg string, args ...any) { l.add("WARN", msg, args) }
func (l *recLog) Infof(msg string, args ...any) { l.add("INFO", msg, args) }

// Debugf keeps no lines, only the socket transitions (see sockSeq).
func (l *recLog) Debugf(msg string, args ...any) {
	r := l.rootLog()
	switch {
	case strings.HasPrefix(msg, logPumpStart) && len(args) == 1:
		r.mu.Lock()
		r.sock.cur = args[0]
		r.mu.Unlock()
		l.mark(&r.sock.start)
	case strings.HasPrefix(msg, logPumpExit) && len(args) == 1:
		// An older socket's pump (one whatsmeow closed itself for the
		// reconnect after stream error 515) may exit after the next
		// started.
		r.mu.Lock()
		newest := r.sock.cur == args[0]
		r.mu.Unlock()
		if newest {
			l.mark(&r.sock.exit)
		}
	default:
		for _, p := range onDisconnectLogs {
			if strings.HasPrefix(msg, p) {
				l.mark(&r.sock.handled)
				return
			}
		}
	}
}
func (l *recLog) Sub(module string) waLog.Logger {
	name := module
	if l.module != "" {
		name = l.module + "/" + module
	}
	return &recLog{module: name, root: l.rootLog()}
}

func (l *recLog) lines() []string {
	r := l.rootLog()
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.all...)
}

func (l *recLog) problems() []string {
	r := l.rootLog()
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bad...)
}

// firstQR connects an unpaired client and returns the QR channel and the
// first code.
func firstQR(t testing.TB, c *client) (<-chan whatsmeow.QRChannelItem, string) {
	t.Helper()
	qr, code, err := firstQRErr(c)
	if err != nil {
		t.Fatal(err)
	}
	return qr, code
}

func firstQRErr(c *client) (<-chan whatsmeow.QRChannelItem, string, error) {
	qr, err := c.GetQRChannel(context.Background())
	if err != nil {
		return nil, "", fmt.Errorf("GetQRChannel: %w", err)
	}
	if err := c.Connect(); err != nil {
		return nil, "", fmt.Errorf("Connect: %w", err)
	}
	item, err := c.nextQRErr(qr)
	if err != nil {
		return nil, "", err
	}
	if item.Event != whatsmeow.QRChannelEventCode {
		return nil, "", fmt.Errorf("first QR channel item is %q, want a code", item.Event)
	}
	return qr, item.Code, nil
}

func nextQR(t testing.TB, c *client, qr <-chan whatsmeow.QRChannelItem) whatsmeow.QRChannelItem {
	t.Helper()
	item, err := c.nextQRErr(qr)
	if err != nil {
		t.Fatal(err)
	}
	return item
}

// nextQRErr receives the next QR channel item.
//
// whatsmeow's QR channel (qrchan.go) sends codes from one goroutine and
// closes the channel from the event dispatcher without synchronising the
// two, which the race detector reports. After each receive this takes the
// recorder's lock, which the dispatcher takes too (our handler runs before
// the QR channel's), so the close is ordered after the send.
func (c *client) nextQRErr(qr <-chan whatsmeow.QRChannelItem) (whatsmeow.QRChannelItem, error) {
	select {
	case item, ok := <-qr:
		c.mu.Lock()
		c.mu.Unlock()
		if !ok {
			return item, errors.New("QR channel closed")
		}
		return item, nil
	case <-time.After(waitTimeout):
		return whatsmeow.QRChannelItem{}, errors.New("timed out waiting for the QR channel")
	}
}

// pairQR links a new device by QR and waits until it is connected.
func pairQR(t testing.TB, emu *waemu.Server, container *sqlstore.Container, phone, name string) (*client, string) {
	t.Helper()
	c, jid, err := pairQRErr(t, emu, container.NewDevice(), phone, name)
	if err != nil {
		t.Fatal(err)
	}
	return c, jid
}

// pairQRErr is pairQR for goroutines other than the test's.
func pairQRErr(t testing.TB, emu *waemu.Server, dev *store.Device, phone, name string) (*client, string, error) {
	c := newClient(t, emu, dev)
	qr, code, err := firstQRErr(c)
	if err != nil {
		return nil, "", err
	}
	jid, err := emu.Scan(context.Background(), code, phone, name)
	if err != nil {
		return nil, "", fmt.Errorf("Scan: %w", err)
	}
	item, err := c.nextQRErr(qr)
	if err != nil {
		return nil, "", err
	}
	if item != whatsmeow.QRChannelSuccess {
		return nil, "", fmt.Errorf("QR channel after scan: %+v, want success", item)
	}
	if _, err := c.waitNErr("Connected after pairing", 1, isConnected); err != nil {
		return nil, "", err
	}
	c.jid = jid
	return c, jid, nil
}

// snapshot copies the recorded events.
func (c *client) snapshot() []any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]any(nil), c.events...)
}
