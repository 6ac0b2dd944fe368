package netguard

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// table is a TableResolver with answers given as strings.
func table(answers map[string][]string) *TableResolver {
	r := &TableResolver{}
	for host, addrs := range answers {
		var as []netip.Addr
		for _, a := range addrs {
			as = append(as, netip.MustParseAddr(a))
		}
		r.Set(host, as...)
	}
	return r
}

func TestCheckURL(t *testing.T) {
	res := table(map[string][]string{
		"hooks.example.com":    {"93.184.216.34"},
		"internal.example.com": {"10.1.2.3"},
		"mixed.example.com":    {"93.184.216.34", "192.168.1.10"},
		"metadata.example.com": {"169.254.169.254"},
		"v6.example.com":       {"2606:2800:220:1:248:1893:25c8:1946"},
		"v6local.example.com":  {"fd00:ec2::254"},
	})
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
		// Found by FuzzCheckURL: a port above 65535 was accepted, and every
		// delivery to it would fail.
		{"port too large", Guard{}, "https://hooks.example.com:100000/wh", "port"},
		{"port zero", Guard{}, "https://hooks.example.com:0/wh", "port"},
		{"highest port", Guard{}, "https://hooks.example.com:65535/wh", ""},
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
