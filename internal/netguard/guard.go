// Package netguard decides which URLs a user may register as a webhook
// and which addresses a delivery may connect to. It depends on the
// standard library only, so its fuzz target (FuzzCheckURL) builds quickly
// in `make test` (scripts/test.sh).
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrRefused marks a URL or address the service will not send to; its
// message says why, for the user who typed the URL.
var ErrRefused = errors.New("webhook: refused")

// Resolver answers which addresses a host name has; *net.Resolver is the
// real one, tests pass a fake so that no lookup or packet leaves loopback.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Guard decides which URLs a user may register and which addresses a
// delivery may connect to (docs/SECURITY.md, "Webhooks"): https only
// (unless AllowHTTP), and no loopback, private, link-local, metadata or
// otherwise special address (unless AllowPrivate), checked at registration
// and again on the address actually dialled, so a DNS answer that changes
// later (rebinding) does not get through.
type Guard struct {
	AllowHTTP    bool
	AllowPrivate bool
	// Resolver defaults to net.DefaultResolver.
	Resolver Resolver
	// Dial connects to an address that passed the check; nil is a
	// net.Dialer with the socket-level check. Tests set it to prove that a
	// refused address is never dialled.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// MaxURLLength bounds a registered URL.
const MaxURLLength = 2048

func refused(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrRefused}, args...)...)
}

func (g Guard) resolver() Resolver {
	if g.Resolver != nil {
		return g.Resolver
	}
	return net.DefaultResolver
}

// CheckURL parses raw and refuses what the service must not send to. The
// host is resolved (through Resolver) and every address it has must be
// allowed.
func (g Guard) CheckURL(ctx context.Context, raw string) (*url.URL, error) {
	if len(raw) > MaxURLLength {
		return nil, refused("the URL is longer than %d characters", MaxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || !u.IsAbs() {
		return nil, refused("the URL must be an absolute https:// URL")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !g.AllowHTTP {
			return nil, refused("only https:// URLs are allowed")
		}
	default:
		return nil, refused("only https:// URLs are allowed")
	}
	if u.User != nil {
		return nil, refused("the URL must not carry a user name or password")
	}
	if u.Fragment != "" {
		return nil, refused("the URL must not have a fragment")
	}
	host := u.Hostname()
	if host == "" {
		return nil, refused("the URL has no host")
	}
	if p := u.Port(); p != "" {
		// url.Parse checks only that a port is digits.
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, refused("the port must be between 1 and 65535")
		}
	}
	if g.AllowPrivate {
		return u, nil
	}
	lower := strings.ToLower(strings.TrimSuffix(host, "."))
	if lower == "localhost" || strings.HasSuffix(lower, ".localhost") {
		return nil, refused("%s is a loopback address", host)
	}
	addrs, err := g.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if err := checkAddr(a); err != nil {
			return nil, err
		}
	}
	return u, nil
}

func (g Guard) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := g.resolver().LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return nil, refused("the host %s does not resolve", host)
	}
	return addrs, nil
}

// Special-purpose ranges that net/netip's predicates do not cover.
var blockedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT (and Alibaba's metadata, 100.100.100.200)
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64: could reach any IPv4 address
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4: embeds an IPv4 address
}

// checkAddr refuses an address that is not a public unicast one.
func checkAddr(a netip.Addr) error {
	a = a.Unmap()
	switch {
	case a.IsLoopback():
		return refused("%s is a loopback address", a)
	case a.IsPrivate():
		return refused("%s is a private address", a)
	case a.IsLinkLocalUnicast():
		return refused("%s is a link-local address (cloud metadata lives there)", a)
	case a.IsUnspecified(), a.IsMulticast(), a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast():
		return refused("%s is not a unicast address", a)
	}
	for _, p := range blockedPrefixes {
		if p.Contains(a) {
			return refused("%s is a special-purpose address", a)
		}
	}
	return nil
}

// control runs on every socket just before it connects, with the address
// it connects to: the last word, whatever resolved the name.
func (g Guard) control(_, address string, _ syscall.RawConn) error {
	if g.AllowPrivate {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return refused("cannot check address %q", address)
	}
	return checkAddr(ap.Addr())
}

// DialContext resolves addr's host through Resolver, refuses it unless
// every address is allowed, and connects to the first that answers, with
// the socket-level check as well.
func (g Guard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if a, perr := netip.ParseAddr(host); perr == nil {
		addrs = []netip.Addr{a}
	} else {
		addrs, err = g.resolver().LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("webhook: resolve %s: %w", host, err)
		}
	}
	if !g.AllowPrivate {
		for _, a := range addrs {
			if err := checkAddr(a); err != nil {
				return nil, err
			}
		}
	}
	dial := g.Dial
	if dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second, Control: g.control}
		dial = d.DialContext
	}
	var firstErr error
	for _, a := range addrs {
		c, err := dial(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
		if err == nil {
			return c, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if firstErr == nil {
		firstErr = fmt.Errorf("webhook: %s has no address", host)
	}
	return nil, firstErr
}

// Client is the HTTP client deliveries use: every connection through
// DialContext, no proxy from the environment, no redirects, timeout per
// request.
func (g Guard) Client(timeout time.Duration) *http.Client {
	tr := &http.Transport{
		DialContext:           g.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          200,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
