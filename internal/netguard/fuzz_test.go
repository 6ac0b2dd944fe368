package netguard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// forbidden is an independent statement of the addresses a webhook must
// never reach in the default configuration (loopback, private, link-local
// and the cloud metadata services, unspecified, multicast), written as
// prefixes rather than with net/netip's predicates that checkAddr uses.
var forbidden = func() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range []string{
		"0.0.0.0/8", "127.0.0.0/8", // this network, loopback
		"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", // private
		"100.64.0.0/10",              // CGNAT (Alibaba's metadata, 100.100.100.200)
		"169.254.0.0/16",             // link-local (AWS/GCP/Azure metadata, 169.254.169.254)
		"224.0.0.0/4", "240.0.0.0/4", // multicast, reserved and broadcast
		"::/128", "::1/128", // unspecified, loopback
		"fc00::/7",                  // unique local (AWS's IPv6 metadata, fd00:ec2::254)
		"fe80::/10",                 // link-local
		"ff00::/8",                  // multicast
		"64:ff9b::/96", "2002::/16", // NAT64 and 6to4 reach IPv4 addresses
		"::ffff:0:0/96", // IPv4-mapped: checked as the IPv4 address below
	} {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}()

// isForbidden reports whether a is an address the default guard must refuse.
func isForbidden(a netip.Addr) bool {
	a = a.WithZone("")
	if a.Is4In6() && isForbidden(a.Unmap()) {
		return true
	}
	for _, p := range forbidden {
		if p.Contains(a) && !(a.Is4In6() && p.Bits() == 96) {
			return true
		}
	}
	return false
}

// FuzzCheckURL feeds the registration check any URL, with the fuzzed
// address as every name's DNS answer (through a TableResolver-like
// resolver that never sends a packet). It never panics, refuses only with
// ErrRefused, and what it accepts in the default configuration is an
// absolute https URL whose host, as an address or as the answer for its
// name, is none of the forbidden addresses; the dial of an accepted URL
// reaches the same kind of address only (the socket-level check included).
// `make test` fuzzes it for a few seconds (scripts/test.sh), `make fuzz`
// longer (scripts/fuzz.sh).
func FuzzCheckURL(f *testing.F) {
	for _, seed := range []struct {
		url  string
		addr string
	}{
		{"https://hooks.example.com/wh", "93.184.216.34"},
		{"https://hooks.example.com/wh", "10.1.2.3"},
		{"https://hooks.example.com/wh", "::ffff:169.254.169.254"},
		{"https://hooks.example.com:8443/wh?x=1", "2606:2800:220:1::1"},
		{"https://127.0.0.1/", "93.184.216.34"},
		{"https://[::1]:443/", "93.184.216.34"},
		{"https://[::ffff:127.0.0.1]/", "93.184.216.34"},
		{"https://[fe80::1%25eth0]/", "93.184.216.34"},
		{"https://169.254.169.254/latest/meta-data", "93.184.216.34"},
		{"https://[fd00:ec2::254]/", "93.184.216.34"},
		{"https://0x7f.1/", "127.0.0.1"},
		{"https://2130706433/", "127.0.0.1"},
		{"https://localhost./", "127.0.0.1"},
		{"https://a.LOCALHOST/", "93.184.216.34"},
		{"http://hooks.example.com/", "93.184.216.34"},
		{"https://u:p@hooks.example.com/", "93.184.216.34"},
		{"https://hooks.example.com\\@10.0.0.1/", "10.0.0.1"},
		{"https://hooks.example.com#@10.0.0.1", "93.184.216.34"},
		{"//hooks.example.com/", "93.184.216.34"},
		{"HTTPS://HOOKS.EXAMPLE.COM/", "93.184.216.34"},
		{"https://100.100.100.200/", "93.184.216.34"},
		{"https://[64:ff9b::a00:1]/", "93.184.216.34"},
	} {
		a := netip.MustParseAddr(seed.addr)
		f.Add(seed.url, a.AsSlice(), false)
	}
	f.Fuzz(func(t *testing.T, raw string, answer []byte, allowHTTP bool) {
		ans, answerOK := netip.AddrFromSlice(answer)
		res := fuzzResolver{addr: ans, ok: answerOK}
		g := Guard{AllowHTTP: allowHTTP, Resolver: res}
		u, err := g.CheckURL(context.Background(), raw)
		if err != nil {
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("CheckURL(%q) = %v: not ErrRefused", raw, err)
			}
			return
		}
		again, err := url.Parse(raw)
		if err != nil || !again.IsAbs() || again.Host == "" {
			t.Fatalf("accepted %q, which is not an absolute URL (%v)", raw, err)
		}
		switch u.Scheme {
		case "https":
		case "http":
			if !allowHTTP {
				t.Fatalf("accepted plain http %q", raw)
			}
		default:
			t.Fatalf("accepted scheme %q in %q", u.Scheme, raw)
		}
		host := u.Hostname()
		if lh := strings.ToLower(strings.TrimSuffix(host, ".")); lh == "localhost" || strings.HasSuffix(lh, ".localhost") {
			t.Fatalf("accepted %q: host %q is localhost", raw, host)
		}
		var reached []netip.Addr
		if a, perr := netip.ParseAddr(host); perr == nil {
			reached = []netip.Addr{a}
		} else {
			reached = []netip.Addr{ans} // accepted, so the name resolved
		}
		for _, a := range reached {
			if isForbidden(a) {
				t.Fatalf("accepted %q, whose host %q is (or resolves to) forbidden %s", raw, host, a)
			}
		}

		// What a delivery to it would connect to: every address the dial
		// is handed, and the socket-level check on it, agree.
		port := u.Port()
		if port == "" {
			port = "443"
		}
		var dialled []string
		g.Dial = func(_ context.Context, _, addr string) (net.Conn, error) {
			dialled = append(dialled, addr)
			if err := g.control("tcp", addr, nil); err != nil {
				t.Fatalf("dial handed %s for accepted %q, which the socket check refuses: %v", addr, raw, err)
			}
			return nil, errors.New("fuzz: no connection")
		}
		_, _ = g.DialContext(context.Background(), "tcp", net.JoinHostPort(host, port))
		for _, d := range dialled {
			ap, err := netip.ParseAddrPort(d)
			if err != nil || isForbidden(ap.Addr()) {
				t.Fatalf("accepted %q dials %s", raw, d)
			}
		}
	})
}

// fuzzResolver answers every name with one address (or not found) and
// never sends a packet.
type fuzzResolver struct {
	addr netip.Addr
	ok   bool
}

func (r fuzzResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if !r.ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return []netip.Addr{r.addr}, nil
}
