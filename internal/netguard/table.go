package netguard

import (
	"context"
	"net"
	"net/netip"
	"sync"
)

// TableResolver answers from a table and never sends a packet: tests and
// the fuzz target resolve through it, so no lookup leaves the process, and
// change its answers to play DNS rebinding.
type TableResolver struct {
	mu      sync.Mutex
	answers map[string][]netip.Addr
}

// Set makes host resolve to addrs (none: not found).
func (r *TableResolver) Set(host string, addrs ...netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.answers == nil {
		r.answers = map[string][]netip.Addr{}
	}
	r.answers[host] = append([]netip.Addr(nil), addrs...)
}

// LookupNetIP answers host from the table, or not found.
func (r *TableResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a := r.answers[host]; len(a) > 0 {
		return append([]netip.Addr(nil), a...), nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}
