package waemu

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
)

const (
	// writeTimeout bounds one frame write to a slow or dead client.
	writeTimeout = 10 * time.Second
	// requestTimeout bounds how long the emulator waits for the client's
	// answer to a server request (pair-success, the code-pairing hello).
	requestTimeout = 30 * time.Second
	// closeLinger is how long the emulator waits, after a stream error or
	// failure, for whatsmeow to handle it before closing the socket: a
	// socket closed first looks like a network error, and the client would
	// reconnect instead of accepting that it was replaced or logged out.
	closeLinger = time.Second
	// logoutLinger is how long the emulator waits, after answering a
	// logout, for the client to close the socket itself, as whatsmeow does
	// the moment it has the answer. On a slow path that close is a
	// handshake of two latencies (1 s each way in the worker's slow-logout
	// test); a server close landing inside it meets whatsmeow's own
	// FrameSocket.Close from the read pump, which races (unsynchronised
	// fields) with the Disconnect in Logout. With closeLinger the race
	// detector flagged it in 2 of 12 runs of that test.
	logoutLinger = 5 * time.Second
	// restartLinger is how long the emulator waits for the client to close
	// the socket itself after a 515 stream restart.
	restartLinger = 5 * time.Second
)

// conn is one client websocket after the Noise handshake: either a pairing
// connection (reg != nil) or the login of a known device (jid != "").
type conn struct {
	srv    *Server
	ws     *websocket.Conn
	log    *slog.Logger
	remote string // the peer's address (a proxy's, when the client uses one)
	fr     frameReader

	// ctx ends when the socket closes (or the server does).
	ctx    context.Context
	cancel context.CancelFunc

	hs *handshakeResult

	wmu sync.Mutex // orders encryption counter and wire
	wn  uint32     // frames written
	rn  uint32     // frames read (read loop only)

	mu      sync.Mutex
	waiters map[string]chan *waBinary.Node
	nextID  uint64

	jid string        // device JID of a login connection; set before the read loop
	reg *registration // pairing state of a pairing connection; set before the read loop

	closeOnce sync.Once
}

// serveWS accepts a client websocket, runs the handshake and hands the
// connection to pairing or login.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if !s.enter() {
		http.Error(w, "emulator is shutting down", http.StatusServiceUnavailable)
		return
	}
	defer s.connWG.Done()
	// whatsmeow sends Origin: https://web.whatsapp.com, which is not our
	// host; the Noise handshake, not the origin, is what matters here.
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		s.log.Debug("websocket accept failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	ws.SetReadLimit(maxFrame + 16)
	c := &conn{srv: s, ws: ws, log: s.log.With("remote", r.RemoteAddr), remote: r.RemoteAddr}
	c.fr.ws = ws
	c.ctx, c.cancel = context.WithCancel(s.ctx)
	defer c.close()

	hctx, cancel := context.WithTimeout(c.ctx, handshakeTimeout)
	hs, err := serverHandshake(hctx, &c.fr, ws, s.certs)
	cancel()
	if err != nil {
		c.log.Debug("handshake failed", "err", err)
		return
	}
	c.hs = hs
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()

	if node, refused := s.refusal(c); refused {
		c.endWith(node)
	} else if hs.payload.GetDevicePairingData() != nil {
		if err := c.startPairing(); err != nil {
			c.log.Warn("pairing connection refused", "err", err)
		}
	} else {
		c.login()
	}
	// Also after a refusal: the socket closes once the client had time to
	// read why.
	c.readLoop()
}

// close ends the connection once and forgets it everywhere.
func (c *conn) close() {
	c.closeOnce.Do(func() {
		c.cancel()
		c.ws.CloseNow()
		s := c.srv
		s.mu.Lock()
		delete(s.conns, c)
		if c.jid != "" && s.live[c.jid] == c {
			delete(s.live, c.jid)
		}
		if c.reg != nil {
			s.retireRefsLocked(c.reg, ErrQRExpired)
		}
		s.mu.Unlock()
		c.log.Debug("connection closed", "jid", c.jid)
	})
}

// readLoop decrypts and dispatches the client's nodes until the socket ends.
func (c *conn) readLoop() {
	for {
		frame, err := c.fr.next(c.ctx)
		if err != nil {
			c.log.Debug("read ended", "jid", c.jid, "err", err)
			return
		}
		plain, err := c.hs.fromClient.Open(frame[:0], iv(c.rn), frame, nil)
		c.rn++
		if err != nil {
			c.log.Warn("undecryptable frame; closing", "jid", c.jid, "err", err)
			return
		}
		data, err := waBinary.Unpack(plain)
		if err != nil {
			c.log.Warn("bad frame compression; closing", "jid", c.jid, "err", err)
			return
		}
		node, err := waBinary.Unmarshal(data)
		if err != nil {
			c.log.Warn("undecodable node; closing", "jid", c.jid, "err", err)
			return
		}
		c.handleNode(node)
	}
}

func (c *conn) handleNode(node *waBinary.Node) {
	switch node.Tag {
	case "message":
		c.handleMessage(node)
		return
	case "receipt":
		c.handleReceipt(node)
		return
	case "ack":
		c.handleAck(node)
		return
	case "iq":
	default:
		// presence, chatstate, ...: nothing the emulator needs.
		return
	}
	switch node.AttrGetter().OptionalString("type") {
	case "result", "error":
		c.deliver(node)
	default:
		c.handleIQ(node)
	}
}

// send encrypts and writes one node.
func (c *conn) send(node waBinary.Node) error {
	data, err := waBinary.Marshal(node)
	if err != nil {
		return fmt.Errorf("marshal %s: %w", node.Tag, err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	ct := c.hs.toClient.Seal(nil, iv(c.wn), data, nil)
	c.wn++
	ctx, cancel := context.WithTimeout(c.ctx, writeTimeout)
	defer cancel()
	if err := writeFrame(ctx, c.ws, ct); err != nil {
		return fmt.Errorf("send %s: %w", node.Tag, err)
	}
	return nil
}

// newID returns an id for a server-initiated iq or notification.
func (c *conn) newID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextID++
	return "waemu-" + strconv.FormatUint(c.nextID, 10)
}

// request sends a server iq and waits for the client's result or error.
func (c *conn) request(ctx context.Context, node waBinary.Node) (*waBinary.Node, error) {
	id, _ := node.Attrs["id"].(string)
	ch := c.expect(id)
	defer c.unexpect(id)
	if err := c.send(node); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrClientGone, err)
	}
	return c.await(ctx, ch)
}

// expect registers a waiter for the iq answer with this id.
func (c *conn) expect(id string) chan *waBinary.Node {
	ch := make(chan *waBinary.Node, 1)
	c.mu.Lock()
	if c.waiters == nil {
		c.waiters = map[string]chan *waBinary.Node{}
	}
	c.waiters[id] = ch
	c.mu.Unlock()
	return ch
}

func (c *conn) unexpect(id string) {
	c.mu.Lock()
	delete(c.waiters, id)
	c.mu.Unlock()
}

func (c *conn) await(ctx context.Context, ch chan *waBinary.Node) (*waBinary.Node, error) {
	t := time.NewTimer(requestTimeout)
	defer t.Stop()
	select {
	case n := <-ch:
		return n, nil
	case <-c.ctx.Done():
		return nil, ErrClientGone
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the client: %w", ctx.Err())
	case <-t.C:
		return nil, ErrClientTimeout
	}
}

// Barrier returns once the logged-in client of device dev has handled
// everything the emulator sent it before the call: it sends a notification
// of a type whatsmeow does not know and waits for its ack. whatsmeow
// handles a connection's nodes one after the other on one goroutine and,
// with SynchronousAck, acks each at the end of its handling, so the ack of
// the barrier comes after every earlier node's handling and ack (and,
// through the socket, happens before Barrier returns, for the race
// detector too). Work whatsmeow starts on goroutines of its own (prekey
// uploads, app state) is not covered. Tests call it before Disconnect:
// whatsmeow's frame socket reads its connection unlocked while Disconnect
// clears it, so an ack still being sent races with the Disconnect.
func (s *Server) Barrier(ctx context.Context, dev string) error {
	c := s.liveConn(dev)
	if c == nil {
		return fmt.Errorf("%w: %s is not connected", ErrClientGone, dev)
	}
	id := c.newID()
	ch := c.expect(id)
	defer c.unexpect(id)
	err := c.send(waBinary.Node{Tag: "notification", Attrs: waBinary.Attrs{
		"id": id, "type": "waemu_barrier", "from": types.ServerJID, "t": strconv.FormatInt(time.Now().Unix(), 10),
	}})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrClientGone, err)
	}
	_, err = c.await(ctx, ch)
	return err
}

// deliver hands an iq answer to its waiter; answers nobody waits for (the
// client's ack of pair-device) are dropped.
func (c *conn) deliver(node *waBinary.Node) {
	id, _ := node.Attrs["id"].(string)
	c.mu.Lock()
	ch := c.waiters[id]
	delete(c.waiters, id)
	c.mu.Unlock()
	if ch != nil {
		ch <- node
	}
}

// endWith sends a final node (stream error or failure) and closes the socket
// once the client had time to handle it, without blocking the caller.
func (c *conn) endWith(node waBinary.Node) {
	if err := c.send(node); err != nil {
		c.log.Debug("final node not sent", "tag", node.Tag, "err", err)
		c.close()
		return
	}
	c.closeAfter(closeLinger)
}

// closeAfter closes the socket after d unless it closes first.
func (c *conn) closeAfter(d time.Duration) {
	ok := c.srv.spawn(func() {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-c.ctx.Done():
		case <-t.C:
		}
		c.close()
	})
	if !ok {
		c.close() // the server is closing anyway
	}
}

// serverAttrs are the attributes of a node the server originates.
func serverAttrs(kv ...any) waBinary.Attrs {
	a := waBinary.Attrs{"from": types.ServerJID}
	for i := 0; i+1 < len(kv); i += 2 {
		a[kv[i].(string)] = kv[i+1]
	}
	return a
}

func streamErrorDeviceRemoved() waBinary.Node {
	return waBinary.Node{Tag: "stream:error", Attrs: waBinary.Attrs{"code": "401"},
		Content: []waBinary.Node{{Tag: "conflict", Attrs: waBinary.Attrs{"type": "device_removed"}}}}
}

func streamErrorReplaced() waBinary.Node {
	return waBinary.Node{Tag: "stream:error",
		Content: []waBinary.Node{{Tag: "conflict", Attrs: waBinary.Attrs{"type": "replaced"}}}}
}

func streamErrorRestart() waBinary.Node {
	return waBinary.Node{Tag: "stream:error", Attrs: waBinary.Attrs{"code": "515"}}
}
