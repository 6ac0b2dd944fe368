package testenv

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
)

// SOCKS5 is a SOCKS5 proxy (RFC 1928, CONNECT only, optionally with
// RFC 1929 username/password) on loopback, for tests that route WhatsApp
// traffic through a proxy. It records the local address of every
// connection it opens onward, so a test can match what the server saw
// arrive against the proxy, and it can be made to refuse.
type SOCKS5 struct {
	ln         net.Listener
	user, pass string

	mu      sync.Mutex
	refuse  bool
	onward  []string // local addresses of the onward connections
	targets []string // CONNECT targets
	conns   []net.Conn
}

// NewSOCKS5 starts a proxy on 127.0.0.1 that requires user/pass unless
// both are empty; it stops at test end.
func NewSOCKS5(t testing.TB, user, pass string) *SOCKS5 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &SOCKS5{ln: ln, user: user, pass: pass}
	go p.serve()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's host:port.
func (p *SOCKS5) Addr() string { return p.ln.Addr().String() }

// Refuse makes the proxy answer every CONNECT with "connection refused"
// and cuts the connections it carries (true), or work again (false).
func (p *SOCKS5) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	conns := p.conns
	if on {
		p.conns = nil
	}
	p.mu.Unlock()
	if on {
		for _, c := range conns {
			c.Close()
		}
	}
}

// Onward lists the local addresses of the connections the proxy opened to
// targets, in order.
func (p *SOCKS5) Onward() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.onward...)
}

func (p *SOCKS5) close() {
	p.ln.Close()
	p.Refuse(true)
}

func (p *SOCKS5) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *SOCKS5) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

// handle serves one client connection.
func (p *SOCKS5) handle(c net.Conn) {
	p.track(c)
	target, err := p.greet(c)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	refuse := p.refuse
	p.mu.Unlock()
	var up net.Conn
	if !refuse {
		up, err = net.Dial("tcp", target)
	}
	if refuse || err != nil {
		c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0}) // connection refused
		c.Close()
		return
	}
	p.mu.Lock()
	p.onward = append(p.onward, up.LocalAddr().String())
	p.targets = append(p.targets, target)
	p.mu.Unlock()
	p.track(up)
	if _, err := c.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 0}); err != nil {
		c.Close()
		up.Close()
		return
	}
	go func() { io.Copy(up, c); up.Close() }()
	io.Copy(c, up)
	c.Close()
}

// greet runs the method negotiation, authentication and request, and
// returns the CONNECT target.
func (p *SOCKS5) greet(c net.Conn) (string, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil || hdr[0] != 5 {
		return "", errors.New("not socks5")
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return "", err
	}
	want := byte(0)
	if p.user != "" || p.pass != "" {
		want = 2
	}
	found := false
	for _, m := range methods {
		found = found || m == want
	}
	if !found {
		c.Write([]byte{5, 0xff})
		return "", errors.New("no acceptable method")
	}
	c.Write([]byte{5, want})
	if want == 2 {
		var v [2]byte
		if _, err := io.ReadFull(c, v[:]); err != nil {
			return "", err
		}
		user := make([]byte, v[1])
		if _, err := io.ReadFull(c, user); err != nil {
			return "", err
		}
		var pl [1]byte
		if _, err := io.ReadFull(c, pl[:]); err != nil {
			return "", err
		}
		pass := make([]byte, pl[0])
		if _, err := io.ReadFull(c, pass); err != nil {
			return "", err
		}
		if string(user) != p.user || string(pass) != p.pass {
			c.Write([]byte{1, 1})
			return "", errors.New("bad credentials")
		}
		c.Write([]byte{1, 0})
	}
	var req [4]byte
	if _, err := io.ReadFull(c, req[:]); err != nil || req[0] != 5 || req[1] != 1 {
		return "", errors.New("only CONNECT is supported")
	}
	var host string
	switch req[3] {
	case 1:
		var ip [4]byte
		if _, err := io.ReadFull(c, ip[:]); err != nil {
			return "", err
		}
		host = net.IP(ip[:]).String()
	case 3:
		var l [1]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return "", err
		}
		name := make([]byte, l[0])
		if _, err := io.ReadFull(c, name); err != nil {
			return "", err
		}
		host = string(name)
	case 4:
		var ip [16]byte
		if _, err := io.ReadFull(c, ip[:]); err != nil {
			return "", err
		}
		host = net.IP(ip[:]).String()
	default:
		return "", errors.New("bad address type")
	}
	var port [2]byte
	if _, err := io.ReadFull(c, port[:]); err != nil {
		return "", err
	}
	// Loopback only: the test machine never reaches anything else.
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return "", errors.New("only loopback targets")
	}
	return net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(port[:])))), nil
}
