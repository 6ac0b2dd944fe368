package testenv

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"wasessions/internal/redisconn"
)

// FaultProxy is a Toxiproxy proxy, run inside the test process, between a
// program under test and one of its stores (Postgres, Redis) or the
// WhatsApp emulator, on loopback. Tests point the program at Addr and then
// break the link the ways a network does: refuse connections (Down), stop
// every byte without closing anything (Hang), cut the open connections
// mid-stream (Cut), or slow everything down (Latency).
type FaultProxy struct {
	t     testing.TB
	mu    sync.Mutex
	proxy *toxiproxy.Proxy
	// Addr is where the proxy listens (127.0.0.1:<port>).
	Addr string
}

// NewFaultProxy starts a proxy to upstream (host:port on loopback). It is
// stopped when the test ends.
func NewFaultProxy(t testing.TB, name, upstream string) *FaultProxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("testenv: start proxy %s to %s: %v", name, upstream, err)
	}
	fp := &FaultProxy{t: t, proxy: p, Addr: p.Listen}
	t.Cleanup(p.Stop)
	return fp
}

// ProxyPostgresURL returns dsn with its host and port replaced by the
// proxy's address.
func (p *FaultProxy) ProxyPostgresURL(dsn string) string {
	p.t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		p.t.Fatalf("testenv: parse database url: %v", err)
	}
	u.Host = p.Addr
	return u.String()
}

// ProxyRedis returns a client on the reserved database r whose
// connections go through the proxy (made with r.Addr as upstream), closed
// when the test ends. Its options are the programs' own (redisconn), so a
// Redis that hangs costs the test what it costs them.
func (p *FaultProxy) ProxyRedis(r RedisDB) *redis.Client {
	p.t.Helper()
	o, err := redisconn.Options(p.ProxyRedisURL(r), "")
	if err != nil {
		p.t.Fatalf("testenv: redis options: %v", err)
	}
	c := redis.NewClient(o)
	p.t.Cleanup(func() { c.Close() })
	return c
}

// ProxyRedisURL is r's REDIS_URL with the proxy's address, for a program
// started as a process.
func (p *FaultProxy) ProxyRedisURL(r RedisDB) string {
	return fmt.Sprintf("redis://%s/%d", p.Addr, r.DB)
}

// Down closes every connection through the proxy and refuses new ones
// until Up, like a store that restarts.
func (p *FaultProxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.proxy.Stop()
}

// Up accepts connections again on the same address.
func (p *FaultProxy) Up() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.proxy.Start(); err != nil && err != toxiproxy.ErrProxyAlreadyStarted {
		p.t.Errorf("testenv: restart proxy: %v", err)
	}
}

// Hang makes every connection, open or new, swallow what is sent to the
// store and close nothing (Toxiproxy's timeout toxic with no timeout): the
// store neither answers nor refuses, like a host that dropped off the
// network. Unhang ends it.
func (p *FaultProxy) Hang() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, stream := range []string{"upstream", "downstream"} {
		body := fmt.Sprintf(`{"name":"hang_%s","type":"timeout","stream":%q,"attributes":{"timeout":0}}`, stream, stream)
		if _, err := p.proxy.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
			p.t.Fatalf("testenv: add timeout toxic: %v", err)
		}
	}
}

// Unhang removes Hang's toxics. Connections that lost bytes while hanging
// are cut, so clients reconnect instead of reading a broken stream.
func (p *FaultProxy) Unhang() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, name := range []string{"hang_upstream", "hang_downstream"} {
		if err := p.proxy.Toxics.RemoveToxic(context.Background(), name); err != nil {
			p.t.Errorf("testenv: remove %s: %v", name, err)
		}
	}
	p.proxy.Stop()
	if err := p.proxy.Start(); err != nil {
		p.t.Errorf("testenv: restart proxy: %v", err)
	}
}

// Cut closes every open connection at once (a dropped socket) and keeps
// accepting new ones.
func (p *FaultProxy) Cut() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.proxy.Stop()
	if err := p.proxy.Start(); err != nil {
		p.t.Errorf("testenv: restart proxy: %v", err)
	}
}

// Latency delays everything through the proxy by d in each direction
// (Toxiproxy's latency toxic), open connections and new ones alike, like a
// slow network path; NoLatency ends it.
func (p *FaultProxy) Latency(d time.Duration) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, stream := range []string{"upstream", "downstream"} {
		body := fmt.Sprintf(`{"name":"latency_%s","type":"latency","stream":%q,"attributes":{"latency":%d}}`,
			stream, stream, d.Milliseconds())
		if _, err := p.proxy.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
			p.t.Fatalf("testenv: add latency toxic: %v", err)
		}
	}
}

// NoLatency removes Latency's toxics.
func (p *FaultProxy) NoLatency() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, name := range []string{"latency_upstream", "latency_downstream"} {
		if err := p.proxy.Toxics.RemoveToxic(context.Background(), name); err != nil {
			p.t.Errorf("testenv: remove %s: %v", name, err)
		}
	}
}
