package waemu

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.mau.fi/whatsmeow/types"
)

// DefaultQRRefs is how many pair-device refs WhatsApp sends: whatsmeow shows
// the first for 60 s and the other five for 20 s each.
const DefaultQRRefs = 6

// Options configure an emulator.
type Options struct {
	// ListenAddr is where the protocol websocket (/ws/chat) listens, plain
	// HTTP; "127.0.0.1:0" picks a free port (see Server.Addr).
	ListenAddr string
	// ControlAddr is where the JSON control API listens; empty serves it
	// only through Server.Handler.
	ControlAddr string
	// StatePath, when set, keeps devices, accounts and the key seed in this
	// JSON file (mode 0600) across restarts; it is rewritten shortly after
	// every change (at most every 200 ms) and at Close. Empty keeps
	// everything in memory.
	StatePath string
	// KeySeed derives the root, intermediate and Noise static keys, so an
	// emulator restarted with the same seed is trusted by the same clients.
	// Empty takes the seed from the state file, or a random one (which the
	// state file then keeps).
	KeySeed []byte
	// QRRefs is how many pair-device refs a pairing connection gets
	// (default DefaultQRRefs). With any count other than 6 whatsmeow shows
	// each code for 20 s, so 1 makes a QR timeout take 20 s.
	QRRefs int
	// QRTimeout, when positive, closes a connection still unpaired this long
	// after its refs were sent; whatsmeow's QR channel then reports
	// "timeout". Zero leaves the timing to the client.
	QRTimeout time.Duration
	// Logger receives structured logs; nil discards them. Keys are never
	// logged.
	Logger *slog.Logger
}

// Stats are the emulator's counters: current connections and totals since
// start.
type Stats struct {
	// Connections are open sockets that completed the Noise handshake.
	Connections int64 `json:"connections"`
	// Pairings completed (QR or code).
	Pairings int64 `json:"pairings"`
	// Logins accepted (success sent).
	Logins int64 `json:"logins"`
	// Conflicts are logins that replaced a live connection of the same
	// device ("stream replaced").
	Conflicts int64 `json:"conflicts"`
	// RefusedLogins were answered 503 while RefuseLogins was in force.
	RefusedLogins int64 `json:"refused_logins"`
	// Keepalives are answered keepalive pings.
	Keepalives int64 `json:"keepalives"`
	// Devices are the linked devices known now.
	Devices int `json:"devices"`
	// Peers are the peer phones (POST /peers).
	Peers int `json:"peers"`
	MessageStats
}

// DeviceInfo describes a linked device.
type DeviceInfo struct {
	JID       string    `json:"jid"`
	LID       string    `json:"lid"`
	Phone     string    `json:"phone"` // "+" and digits
	Name      string    `json:"name"`
	Connected bool      `json:"connected"`
	Conflicts int       `json:"conflicts"`
	PreKeys   int       `json:"prekeys"`
	PairedAt  time.Time `json:"paired_at"`
	// OS and Platform are the device's name on the phone as its client
	// announced it when pairing: e.g. "Linux" and "CHROME" read "Chrome
	// (Linux)" in the phone's linked-devices list.
	OS       string `json:"os"`
	Platform string `json:"platform"`
}

// Errors the emulator's operations return; the control API maps each to an
// HTTP status (see statusOf).
var (
	ErrMalformedQR   = errors.New("malformed QR code")
	ErrUnknownQR     = errors.New("unknown QR code")
	ErrQRExpired     = errors.New("QR code expired")
	ErrQRUsed        = errors.New("QR code already scanned")
	ErrMalformedCode = errors.New("malformed pairing code")
	ErrUnknownCode   = errors.New("no pending code pairing")
	ErrAmbiguousCode = errors.New("several code pairings are pending; give the phone number")
	ErrWrongCode     = errors.New("wrong pairing code")
	ErrBadPhone      = errors.New("bad phone number")
	ErrUnknownDevice = errors.New("unknown device")
	ErrClientGone    = errors.New("the client's connection closed")
	ErrClientTimeout = errors.New("the client did not answer in time")
	ErrPairRejected  = errors.New("the client rejected the pairing")
	ErrClosed        = errors.New("emulator closed")
)

// Server is a running emulator.
type Server struct {
	opts  Options
	log   *slog.Logger
	certs *certs

	wsLn, ctlLn   net.Listener
	wsSrv, ctlSrv *http.Server
	handler       http.Handler

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	connWG sync.WaitGroup // socket handlers and their helpers
	bgWG   sync.WaitGroup // the state saver

	mu          sync.Mutex
	closed      bool
	st          *snapshot
	conns       map[*conn]struct{}    // connections past the handshake
	live        map[string]*conn      // device JID → its logged-in connection
	refs        map[string]*conn      // open QR ref → its pairing connection
	retired     map[string]retiredRef // refs scanned or expired, for precise errors
	refuseUntil time.Time
	lids        map[string]string // LID user → phone, filled on lookup (peers.go)

	msgs *messaging // message traffic with the emulated phones (messages.go)
	ref  refusals   // switchable refusals of the real server (refusals.go)

	pairings, logins, conflicts, refused, keepalives atomic.Int64

	dirty  chan struct{}
	saveMu sync.Mutex
}

// retiredRef remembers why a ref no longer pairs.
type retiredRef struct {
	err error
	at  time.Time
}

// saveInterval is the least time between two writes of the state file.
const saveInterval = 200 * time.Millisecond

// retiredTTL bounds how long retired refs are remembered.
const retiredTTL = time.Hour

// Start loads the state, derives the keys, binds both listeners and serves
// until Close is called or ctx is done.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.QRRefs <= 0 {
		opts.QRRefs = DefaultQRRefs
	}
	if opts.QRRefs > 100 {
		return nil, fmt.Errorf("waemu: %d QR refs is more than 100", opts.QRRefs)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	st := newSnapshot()
	if opts.StatePath != "" {
		var err error
		if st, err = loadSnapshot(opts.StatePath); err != nil {
			return nil, err
		}
	}
	seed := opts.KeySeed
	if len(seed) == 0 {
		var err error
		if seed, err = st.seed(); err != nil {
			return nil, err
		}
	}
	if len(seed) == 0 {
		var err error
		if seed, err = newSeed(); err != nil {
			return nil, err
		}
	}
	st.KeySeed = hex.EncodeToString(seed)
	c, err := newCerts(seed)
	if err != nil {
		return nil, err
	}

	s := &Server{
		opts:    opts,
		log:     opts.Logger,
		certs:   c,
		st:      st,
		conns:   map[*conn]struct{}{},
		live:    map[string]*conn{},
		refs:    map[string]*conn{},
		retired: map[string]retiredRef{},
		dirty:   make(chan struct{}, 1),
	}
	s.msgs = newMessaging(s)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.handler = s.routes()

	var lc net.ListenConfig
	if s.wsLn, err = lc.Listen(ctx, "tcp", opts.ListenAddr); err != nil {
		return nil, fmt.Errorf("waemu: listen %s: %w", opts.ListenAddr, err)
	}
	if opts.ControlAddr != "" {
		if s.ctlLn, err = lc.Listen(ctx, "tcp", opts.ControlAddr); err != nil {
			s.wsLn.Close()
			return nil, fmt.Errorf("waemu: listen %s: %w", opts.ControlAddr, err)
		}
	}
	if opts.StatePath != "" {
		if err := s.save(); err != nil {
			s.wsLn.Close()
			if s.ctlLn != nil {
				s.ctlLn.Close()
			}
			return nil, err
		}
		// Decoding and re-encoding a state with many devices (each holds
		// the one-time prekeys it uploaded, ~28 KiB) leaves a few hundred
		// MiB of garbage; return it now so the RSS is the working set.
		debug.FreeOSMemory()
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws/chat", s.serveWS)
	s.wsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go s.wsSrv.Serve(s.wsLn)
	if s.ctlLn != nil {
		s.ctlSrv = &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
		go s.ctlSrv.Serve(s.ctlLn)
	}
	s.bgWG.Add(1)
	go s.saveLoop()
	go func() {
		select {
		case <-ctx.Done():
			s.Close()
		case <-s.ctx.Done():
		}
	}()

	s.log.Info("waemu started", "listen", s.Addr(), "control", s.ControlAddr(),
		"pubkey", hex.EncodeToString(c.root.Pub[:]), "devices", len(st.Devices), "qr_refs", opts.QRRefs)
	return s, nil
}

// Addr is the bound address of the protocol websocket.
func (s *Server) Addr() string { return s.wsLn.Addr().String() }

// ControlAddr is the bound address of the control API ("" if none).
func (s *Server) ControlAddr() string {
	if s.ctlLn == nil {
		return ""
	}
	return s.ctlLn.Addr().String()
}

// PubKey is the root key a client must trust (whatsmeow.WACertPubKey).
func (s *Server) PubKey() [32]byte { return *s.certs.root.Pub }

// Handler is the JSON control API, for httptest or mounting elsewhere:
//
//	GET  /pubkey                 {"pubkey": "<64 hex>"}
//	POST /phone/scan             {"qr", "phone"?, "name"?} → {"jid"}
//	POST /phone/code             {"code", "phone"?, "name"?} → {"jid"}
//	GET  /devices                [DeviceInfo...]
//	GET  /devices/{jid}          DeviceInfo
//	POST /devices/{jid}/unlink   {"jid", "unlinked": true}
//	POST /devices/{jid}/drop     {"jid", "dropped": bool}
//	GET  /stats                  Stats
//	POST /refuse-logins          {"seconds": N} (0 stops refusing)
//	POST /peers                  {"phone", "name"?} → PeerInfo
//	GET  /peers                  {"peers": [PeerInfo...]}
//	GET  /peers/{jid}/inbox      {"messages": [InboxMessage...]}
//	POST /peers/{jid}/send       {"to", "text", "id"?} → {"id"}
//	POST /peers/{jid}/read       {"ids": [...]} → {"read": N}
//	POST /phone/history          {"account", "chats": [{"with", "messages": [{"text", "fromMe"?}]}]} → {"id", "chats"}
//	GET  /messages/{id}          SentMessage
//	GET|POST|DELETE /faults      fault switches (Fault)
//
// Errors are {"error": "reason"} with a 4xx status (404 for unknown
// devices, QR codes and paths; 400 malformed; 409 already used; 410 expired)
// or 5xx when the client misbehaves.
func (s *Server) Handler() http.Handler { return s.handler }

// Close closes every connection and listener, waits for them to end and
// saves the state. It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	s.cancel()
	err := s.wsSrv.Close()
	if s.ctlSrv != nil {
		err = errors.Join(err, s.ctlSrv.Close())
	}
	for _, c := range conns {
		c.ws.CloseNow()
	}
	s.connWG.Wait()
	s.bgWG.Wait()
	if s.opts.StatePath != "" {
		err = errors.Join(err, s.save())
	}
	s.log.Info("waemu stopped")
	return err
}

// spawn runs f in a goroutine that Close waits for, unless the server is
// closing (then it reports false and does not run f). Adding to connWG
// under mu before Close sets closed keeps Add from racing Close's Wait.
func (s *Server) spawn(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.connWG.Add(1)
	go func() {
		defer s.connWG.Done()
		f()
	}()
	return true
}

// enter registers a socket handler unless the server is closing.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.connWG.Add(1)
	return true
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		Connections:   int64(len(s.conns)),
		Pairings:      s.pairings.Load(),
		Logins:        s.logins.Load(),
		Conflicts:     s.conflicts.Load(),
		RefusedLogins: s.refused.Load(),
		Keepalives:    s.keepalives.Load(),
		Devices:       len(s.st.Devices),
		Peers:         s.peerCountLocked(),
		MessageStats:  s.msgs.stats(),
	}
}

// Devices lists the linked devices, sorted by JID.
func (s *Server) Devices() []DeviceInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]DeviceInfo, 0, len(s.st.Devices))
	for _, d := range s.st.Devices {
		out = append(out, s.infoLocked(d))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].JID < out[j].JID })
	return out
}

// Device describes one linked device, or returns ErrUnknownDevice.
func (s *Server) Device(jid string) (DeviceInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.deviceLocked(jid)
	if err != nil {
		return DeviceInfo{}, err
	}
	return s.infoLocked(d), nil
}

func (s *Server) deviceLocked(jid string) (*device, error) {
	parsed, err := types.ParseJID(jid)
	if err == nil {
		jid = parsed.String()
	}
	d := s.st.Devices[jid]
	if d == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownDevice, jid)
	}
	return d, nil
}

func (s *Server) infoLocked(d *device) DeviceInfo {
	name := ""
	if a := s.st.Accounts[d.Phone]; a != nil {
		name = a.Name
	}
	return DeviceInfo{
		JID: d.JID, LID: d.LID, Phone: "+" + d.Phone, Name: name,
		Connected: s.live[d.JID] != nil, Conflicts: d.Conflicts, PreKeys: d.Keys.count(), PairedAt: d.PairedAt,
		OS: d.OS, Platform: d.Platform,
	}
}

// Unlink removes a device as if the phone unlinked it: a connected client
// gets a device_removed stream error (whatsmeow: LoggedOut, store deleted),
// and any later login of it fails with 401.
func (s *Server) Unlink(jid string) error {
	s.mu.Lock()
	d, err := s.deviceLocked(jid)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	delete(s.st.Devices, d.JID)
	c := s.live[d.JID]
	delete(s.live, d.JID)
	s.mu.Unlock()
	s.markDirty()
	s.log.Info("device unlinked", "jid", d.JID, "was_connected", c != nil)
	if c != nil {
		c.endWith(streamErrorDeviceRemoved())
	}
	return nil
}

// Drop closes a device's socket without a word, as a network failure would;
// whatsmeow reconnects by itself. It reports whether a socket was open.
func (s *Server) Drop(jid string) (bool, error) {
	s.mu.Lock()
	d, err := s.deviceLocked(jid)
	if err != nil {
		s.mu.Unlock()
		return false, err
	}
	c := s.live[d.JID]
	s.mu.Unlock()
	if c == nil {
		return false, nil
	}
	s.log.Info("dropping socket", "jid", d.JID)
	// close, not just CloseNow: the device must be off the live list before
	// the client's immediate reconnect logs in, or that would count as a
	// second connection.
	c.close()
	return true, nil
}

// RefuseLogins makes logins of known devices fail for d, as a WhatsApp
// outage would; d <= 0 stops refusing. Pairing is not affected.
//
// A refused login gets <failure reason="503"/> after the handshake rather
// than HTTP 503 on the upgrade: whatsmeow treats both as retryable, but an
// HTTP error makes the first Connect call return it (unless the client set
// InitialAutoReconnect), while the failure node lets Connect succeed and the
// client then reconnects by itself with growing delays (0 s, 2 s, 4 s, ...;
// client.go autoReconnect), never logging the device out.
func (s *Server) RefuseLogins(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		s.refuseUntil = time.Time{}
	} else {
		s.refuseUntil = time.Now().Add(d)
	}
	s.log.Info("refusing logins", "for", d.String())
}

// markDirty asks the saver to write the state file soon.
func (s *Server) markDirty() {
	if s.opts.StatePath == "" {
		return
	}
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

func (s *Server) saveLoop() {
	defer s.bgWG.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.dirty:
			if err := s.save(); err != nil {
				s.log.Error("save state", "err", err)
			}
		}
		// Coalesce bursts (a thousand pairings) into a few writes; Close
		// saves whatever is still pending.
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(saveInterval):
		}
	}
}

// save writes the state file. saveMu orders concurrent saves so an older
// snapshot never overwrites a newer one.
func (s *Server) save() error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.Lock()
	data, err := json.MarshalIndent(s.st, "", "  ")
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("waemu: marshal state: %w", err)
	}
	return writeFileAtomic(s.opts.StatePath, data)
}
