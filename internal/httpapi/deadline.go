package httpapi

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// deadlines hands out the contexts that bound a request's work against the
// stores (Options.RequestTimeout), one shared by all the requests that
// start within the same tick.
//
// A context.WithTimeout per request sets a runtime timer and stops it
// again, and allocates the context pgx then watches for each query. On GET
// /status, the route clients poll, that was about 3% of a request's CPU
// under wrk (pprof), for a bound that matters only when a store hangs. A
// shared context is created once per tick with a deadline of the tick's
// start plus the timeout plus the tick, so every request is still bounded,
// by between RequestTimeout and RequestTimeout plus one tick, and the
// process runs one timer per tick instead of one per request. Nothing
// cancels a shared context early: it ends at its deadline.
type deadlines struct {
	timeout, tick time.Duration
	cur           atomic.Pointer[deadlineTick]
	mu            sync.Mutex // serialises making the next tick's context
}

type deadlineTick struct {
	ctx context.Context
	// cancel is never called: the context ends at its own deadline,
	// which also stops its timer. It is kept because vet (lostcancel)
	// rightly refuses a discarded one.
	cancel context.CancelFunc
	until  time.Time // requests that start before this use ctx
}

// newDeadlines bounds requests by timeout, in ticks of a tenth of it, at
// most 100 ms.
func newDeadlines(timeout time.Duration) *deadlines {
	return &deadlines{timeout: timeout, tick: min(timeout/10, 100*time.Millisecond)}
}

// context is the shared context for a request starting now.
func (d *deadlines) context() context.Context {
	now := time.Now()
	if t := d.cur.Load(); t != nil && now.Before(t.until) {
		return t.ctx
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if t := d.cur.Load(); t != nil && now.Before(t.until) {
		return t.ctx
	}
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(d.timeout+d.tick))
	d.cur.Store(&deadlineTick{ctx: ctx, cancel: cancel, until: now.Add(d.tick)})
	return ctx
}
