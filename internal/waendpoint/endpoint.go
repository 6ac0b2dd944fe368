// Package waendpoint points an unmodified whatsmeow client at the WhatsApp
// protocol server named by configuration.
//
// whatsmeow always dials wss://web.whatsapp.com/ws/chat and trusts one
// hard-coded certificate root (whatsmeow.WACertPubKey). Production uses both
// as they are; tests and the offline demo point them at the protocol emulator
// (internal/waemu), which speaks the same protocol over plain HTTP with a root
// key of its own. This package is the one place that knows how: the worker
// takes an Endpoint from its configuration and never branches on "emulator or
// not" anywhere else.
package waendpoint

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"

	"go.mau.fi/whatsmeow"
)

// whatsAppHost is the host whatsmeow dials for its websocket (socket.URL).
const whatsAppHost = "web.whatsapp.com"

// Endpoint is where whatsmeow clients connect and which certificate root they
// trust. The zero value means the real WhatsApp service.
type Endpoint struct {
	// Addr is the host:port of a WhatsApp protocol server reached over
	// plain HTTP (the Noise handshake, not TLS, authenticates the server).
	Addr string
	// RootKey is the Curve25519 public key the server's certificate chain
	// is signed with (the emulator's GET /pubkey).
	RootKey [32]byte
}

// Parse builds an Endpoint from configuration strings: addr is host:port and
// pubkeyHex the 64 hex characters of the root key. Both empty gives the zero
// Endpoint (real WhatsApp); one without the other is an error, because a
// server without a trusted key (or a key without a server) can only be a
// configuration mistake.
func Parse(addr, pubkeyHex string) (Endpoint, error) {
	addr, pubkeyHex = strings.TrimSpace(addr), strings.TrimSpace(pubkeyHex)
	switch {
	case addr == "" && pubkeyHex == "":
		return Endpoint{}, nil
	case addr == "":
		return Endpoint{}, errors.New("waendpoint: a root key is set but no server address")
	case pubkeyHex == "":
		return Endpoint{}, fmt.Errorf("waendpoint: server %q has no root key (64 hex characters)", addr)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return Endpoint{}, fmt.Errorf("waendpoint: server address %q is not host:port: %w", addr, err)
	}
	if len(pubkeyHex) != 64 {
		return Endpoint{}, fmt.Errorf("waendpoint: root key must be 64 hex characters, got %d", len(pubkeyHex))
	}
	raw, err := hex.DecodeString(pubkeyHex)
	if err != nil {
		return Endpoint{}, fmt.Errorf("waendpoint: root key is not hex: %w", err)
	}
	e := Endpoint{Addr: addr}
	copy(e.RootKey[:], raw)
	if e.RootKey == ([32]byte{}) {
		return Endpoint{}, errors.New("waendpoint: root key is all zeros")
	}
	return e, nil
}

// IsWhatsApp reports whether e is the real WhatsApp service (the zero value).
func (e Endpoint) IsWhatsApp() bool { return e.Addr == "" }

// String describes the endpoint for logs; the root key is public, so it is
// safe to print.
func (e Endpoint) String() string {
	if e.IsWhatsApp() {
		return "whatsapp"
	}
	return "http://" + e.Addr + " (root " + hex.EncodeToString(e.RootKey[:]) + ")"
}

// InstallRootKey makes whatsmeow trust e's certificate root. The trusted key
// is a package variable of whatsmeow, so it holds for every client in the
// process: call this once at start, before any client connects, and never
// mix endpoints with different keys in one process. No-op for real WhatsApp.
func (e Endpoint) InstallRootKey() {
	if e.IsWhatsApp() {
		return
	}
	// Write only on change: clients of other goroutines read the variable
	// during their handshakes, and rewriting the same value would still be
	// a data race. The lock orders the first write against the compare of
	// any other goroutine installing the same key at the same moment (tests
	// that start several hosts in parallel); a client connects only after
	// its own host's call, so it reads after that write too.
	rootKeyMu.Lock()
	defer rootKeyMu.Unlock()
	if whatsmeow.WACertPubKey != e.RootKey {
		whatsmeow.WACertPubKey = e.RootKey
	}
}

// rootKeyMu serialises InstallRootKey.
var rootKeyMu sync.Mutex

// Apply makes cli dial e instead of web.whatsapp.com, both before login
// (pairing) and after, by giving it HTTP clients whose transport rewrites
// wss://web.whatsapp.com to http://Addr. Call it before cli.Connect. No-op
// for real WhatsApp, so production code can call it unconditionally.
func (e Endpoint) Apply(cli *whatsmeow.Client) {
	e.ApplyVia(cli, nil)
}

// ApplyVia is Apply with the connections made by base (a proxy's
// transport); nil is a direct transport.
func (e Endpoint) ApplyVia(cli *whatsmeow.Client, base *http.Transport) {
	if e.IsWhatsApp() {
		return
	}
	h := e.httpClient(base)
	cli.SetPreLoginHTTPClient(h)
	cli.SetWebsocketHTTPClient(h)
}

// HTTPClient returns the HTTP client Apply installs. It has no timeout on
// purpose: the websocket it opens lives as long as the session.
func (e Endpoint) HTTPClient() *http.Client { return e.httpClient(nil) }

func (e Endpoint) httpClient(base *http.Transport) *http.Client {
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
		// A plain-HTTP websocket to a configured host must not go through
		// an environment proxy.
		base.Proxy = nil
	}
	return &http.Client{Transport: &rewriter{addr: e.Addr, base: base}}
}

// rewriter sends requests for web.whatsapp.com to addr over plain HTTP and
// passes any other request through unchanged.
type rewriter struct {
	addr string
	base http.RoundTripper
}

func (r *rewriter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Hostname() != whatsAppHost {
		return r.base.RoundTrip(req)
	}
	out := req.Clone(req.Context())
	out.URL.Scheme = "http"
	out.URL.Host = r.addr
	out.Host = r.addr
	return r.base.RoundTrip(out)
}
