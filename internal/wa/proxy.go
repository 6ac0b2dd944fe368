package wa

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/net/proxy"
)

// ParseProxy checks a proxy URL as WA_PROXY and the admin route accept it:
// socks5://, http:// or https://, a host and a port, optional
// user:password, nothing else. The error never repeats the password.
func ParseProxy(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("not a URL")
	}
	switch u.Scheme {
	case "socks5", "http", "https":
	default:
		return nil, fmt.Errorf("scheme must be socks5, http or https, got %q", u.Scheme)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return nil, errors.New("must name a host and a port")
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("must not have a path, query or fragment")
	}
	return u, nil
}

// RedactProxy shows a proxy URL without its password, for logs and API
// answers: socks5://user:xxxxx@host:port (net/url's Redacted).
func RedactProxy(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable proxy URL)"
	}
	return u.Redacted()
}

// directTransport is a fresh transport that ignores the environment's
// proxy settings: the service's proxies are configured, never inherited.
func directTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	return t
}

// ProxyTransport is an HTTP transport that reaches the network through
// rawProxy ("" for a direct one). whatsmeow's SetProxyAddress builds the
// same for its own clients; this one is also used where whatsmeow's HTTP
// clients are replaced (the emulator endpoint) and for the version fetch.
func ProxyTransport(rawProxy string) (*http.Transport, error) {
	t := directTransport()
	if rawProxy == "" {
		return t, nil
	}
	u, err := ParseProxy(rawProxy)
	if err != nil {
		return nil, fmt.Errorf("wa: proxy %s: %w", RedactProxy(rawProxy), err)
	}
	if u.Scheme != "socks5" {
		t.Proxy = http.ProxyURL(u)
		return t, nil
	}
	d, err := proxy.FromURL(u, &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("wa: proxy %s: %w", RedactProxy(rawProxy), err)
	}
	cd, ok := d.(proxy.ContextDialer)
	if !ok {
		return nil, fmt.Errorf("wa: proxy %s: dialer cannot take a context", RedactProxy(rawProxy))
	}
	t.DialContext = cd.DialContext
	return t, nil
}
