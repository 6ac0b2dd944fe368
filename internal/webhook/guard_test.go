package webhook

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"wasessions/internal/store"
	"wasessions/internal/testfactory"
)

// fakeResolver answers from a table and never sends a packet; tests
// change its answers to play DNS rebinding.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][]netip.Addr
}

func (f *fakeResolver) set(host string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.answers == nil {
		f.answers = map[string][]netip.Addr{}
	}
	f.answers[host] = nil
	for _, a := range addrs {
		f.answers[host] = append(f.answers[host], netip.MustParseAddr(a))
	}
}

func (f *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a, ok := f.answers[host]; ok && len(a) > 0 {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func TestCheckURL(t *testing.T) {
	res := &fakeResolver{}
	res.set("hooks.example.com", "93.184.216.34")
	res.set("internal.example.com", "10.1.2.3")
	res.set("mixed.example.com", "93.184.216.34", "192.168.1.10")
	res.set("metadata.example.com", "169.254.169.254")
	res.set("v6.example.com", "2606:2800:220:1:248:1893:25c8:1946")
	res.set("v6local.example.com", "fd00:ec2::254")
	tests := []struct {
		name    string
		guard   Guard
		url     string
		wantErr string // "" means allowed
	}{
		{"public https", Guard{}, "https://hooks.example.com/wh", ""},
		{"public ipv6", Guard{}, "https://v6.example.com/wh", ""},
		{"localhost", Guard{}, "https://localhost/wh", "loopback"},
		{"localhost subdomain", Guard{}, "https://api.localhost/wh", "loopback"},
		{"loopback ip", Guard{}, "https://127.0.0.1:8443/wh", "loopback"},
		{"loopback v6", Guard{}, "https://[::1]/wh", "loopback"},
		{"ten net", Guard{}, "https://10.0.0.8/wh", "private"},
		{"name to private", Guard{}, "https://internal.example.com/wh", "private"},
		{"any private answer", Guard{}, "https://mixed.example.com/wh", "private"},
		{"metadata ip", Guard{}, "https://169.254.169.254/latest/meta-data", "link-local"},
		{"metadata name", Guard{}, "https://metadata.example.com/", "link-local"},
		{"aws v6 metadata", Guard{}, "https://v6local.example.com/", "private"},
		{"mapped v4", Guard{}, "https://[::ffff:10.0.0.1]/", "private"},
		{"cgnat", Guard{}, "https://100.100.100.200/", "special-purpose"},
		{"unspecified", Guard{}, "https://0.0.0.0/", "not a unicast"},
		{"plain http", Guard{}, "http://hooks.example.com/wh", "only https"},
		{"plain http allowed", Guard{AllowHTTP: true}, "http://hooks.example.com/wh", ""},
		{"other scheme", Guard{AllowHTTP: true}, "ftp://hooks.example.com/", "only https"},
		{"relative", Guard{}, "/hook", "absolute"},
		{"credentials", Guard{}, "https://u:p@hooks.example.com/", "user name"},
		{"unresolvable", Guard{}, "https://nowhere.example.com/", "does not resolve"},
		{"too long", Guard{}, "https://hooks.example.com/" + strings.Repeat("a", MaxURLLength), "longer"},
		{"private allowed", Guard{AllowPrivate: true}, "https://10.0.0.8/wh", ""},
		{"loopback allowed in dev", Guard{AllowPrivate: true, AllowHTTP: true}, "http://127.0.0.1:9000/wh", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := tt.guard
			g.Resolver = res
			_, err := g.CheckURL(context.Background(), tt.url)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.wantErr != "" && (err == nil || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("err = %v, want ErrRefused with %q", err, tt.wantErr)
			}
		})
	}
}

// The socket-level check refuses whatever address a connection is about
// to be made to, however the name was resolved.
func TestDialControlRefusesPrivateAddresses(t *testing.T) {
	g := Guard{}
	for _, addr := range []string{"127.0.0.1:443", "10.9.8.7:443", "[fe80::1]:443", "169.254.169.254:80", "[::ffff:192.168.0.1]:443"} {
		if err := g.control("tcp", addr, nil); !errors.Is(err, ErrRefused) {
			t.Errorf("control(%s) = %v, want refused", addr, err)
		}
	}
	if err := g.control("tcp", "93.184.216.34:443", nil); err != nil {
		t.Errorf("control(public) = %v", err)
	}
	// A real dial to loopback through the default dialer stops at the
	// control hook: nothing listens there, and the error is the refusal,
	// not "connection refused".
	_, err := g.DialContext(context.Background(), "tcp", "127.0.0.1:9")
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("dial loopback = %v, want refused", err)
	}
}

// A host that resolved to a public address at registration and to a
// private one at delivery (DNS rebinding) is refused at delivery, without
// any connection attempt: the attempt is recorded as failed with the
// reason, and retried.
func TestRebindingRefusedAtDelivery(t *testing.T) {
	res := &fakeResolver{}
	res.set("hooks.example.com", "93.184.216.34")
	var dials atomic.Int32
	guard := Guard{Resolver: res, dial: func(context.Context, string, string) (net.Conn, error) {
		dials.Add(1)
		return nil, errors.New("test: no connection may be made")
	}}
	e := newEnv(t, envOpts{Options: Options{Schedule: []time.Duration{time.Hour}}, guard: &guard})
	u, s := e.session()
	if _, err := guard.CheckURL(e.ctx, "https://hooks.example.com/wh"); err != nil {
		t.Fatalf("registration: %v", err)
	}
	ep, _ := e.endpoint(u, "https://hooks.example.com/wh", false)
	res.set("hooks.example.com", "10.0.0.7")
	e.inbound(u, s)
	var atts []store.WebhookAttempt
	testfactory.Eventually(t, "the attempt to be recorded", func() bool {
		var err error
		atts, _, err = e.st.ListWebhookAttempts(e.ctx, ep.ID, 0, 10)
		return err == nil && len(atts) > 0
	})
	if a := atts[0]; a.Error == nil || !strings.Contains(*a.Error, "10.0.0.7 is a private address") || a.HTTPStatus != nil {
		t.Fatalf("attempt: %+v", a)
	}
	if n := dials.Load(); n != 0 {
		t.Fatalf("%d connections attempted to a refused address", n)
	}
}
