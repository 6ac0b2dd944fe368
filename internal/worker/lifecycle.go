package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"wasessions/internal/store"
)

// Run keeps the leases of hosted sessions until ctx ends: a heartbeat every
// LeaseTTL/3 renews them all in one statement, and a tighter check stops any
// client whose lease this worker could not renew in time, by its own
// monotonic clock, before Postgres would let another worker take it. It
// first takes back what this worker id hosted before a restart, and keeps
// the client version current.
//
// The check runs on its own goroutine and clock: a renewal stuck on a
// Postgres that hangs (rather than refuses) must not hold it up, or it
// fires when the lease lapses in Postgres instead of safetyMargin before.
func (w *Worker) Run(ctx context.Context) {
	go w.restoreOwn(ctx)
	go w.deps.Host.Versions().Run(ctx, w.cfg.VersionRefresh)
	fenceDone := make(chan struct{})
	go func() {
		defer close(fenceDone)
		check := time.NewTicker(min(250*time.Millisecond, w.cfg.LeaseTTL/20))
		defer check.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-check.C:
				w.fenceExpired()
			}
		}
	}()
	defer func() { <-fenceDone }()
	renew := time.NewTicker(w.cfg.LeaseTTL / 3)
	defer renew.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-renew.C:
			w.renew(ctx)
		}
	}
}

// renewTimeout bounds one heartbeat statement: the renewal period, so a
// renewal that hangs gives way to the next one in time. Safety does not
// depend on it: validity counts from before the statement was sent, and
// the fence check runs on its own clock. A budget as short as the safety
// margin (300 ms with a 3 s lease) failed renewals on a Postgres that was
// merely slow, and the fence then stopped healthy clients
// (TestSlowPostgresIsNotAnOutage).
func (w *Worker) renewTimeout() time.Duration { return w.cfg.LeaseTTL / 3 }

// renew is one heartbeat.
func (w *Worker) renew(ctx context.Context) {
	hs := w.snapshot()
	if len(hs) == 0 {
		return
	}
	held := make([]store.Held, len(hs))
	for i, h := range hs {
		held[i] = store.Held{SessionID: h.id, Epoch: h.fence.Epoch}
	}
	if w.hooks.beforeRenew != nil {
		w.hooks.beforeRenew()
	}
	// Validity counts from before the statement is sent: Postgres sets
	// lease_until = now() + TTL at some later instant, so ours ends first.
	sent := time.Now()
	rctx, cancel := context.WithTimeout(ctx, w.renewTimeout())
	r, err := w.deps.Leases.Renew(rctx, w.cfg.WorkerID, held, w.cfg.LeaseTTL, w.cfg.SessionTTL)
	cancel()
	if err != nil {
		w.deps.Metrics.LeaseRenewals.WithLabelValues("error").Inc()
		w.log.Warn("lease heartbeat failed; clients stop if it keeps failing", "sessions", len(hs), "error", err)
		return
	}
	w.deps.Metrics.LeaseRenewals.WithLabelValues("ok").Inc()
	for _, h := range hs {
		if r.Kept[h.id] {
			h.extend(sent.Add(w.cfg.LeaseTTL))
		}
	}
	// A lost lease is about the hosting this renewal carried, not about
	// whatever hosts the session id now: between the snapshot and the
	// answer the session may have been handed off and hosted here again,
	// under a newer epoch that this answer says nothing about.
	lost := make(map[string]bool, len(r.Lost))
	for _, id := range r.Lost {
		lost[id] = true
	}
	for _, h := range hs {
		if lost[h.id] {
			go w.leaseLost(ctx, h)
		}
	}
}

// safetyMargin is how long before the lease's end (by our clock) a client
// is stopped, covering clock-rate drift and the time a disconnect takes.
func (w *Worker) safetyMargin() time.Duration { return w.cfg.LeaseTTL / 10 }

// fenceExpired stops every client whose lease may be about to run out in
// Postgres because heartbeats failed (Postgres unreachable, a long pause).
// The clients are stopped concurrently: when Postgres goes away every
// lease runs out at about the same moment, and one disconnect after the
// other would spend the margin on the first few.
func (w *Worker) fenceExpired() {
	deadline := time.Now().Add(w.safetyMargin())
	var wg sync.WaitGroup
	for _, h := range w.snapshot() {
		if h.expiresBefore(deadline) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h.abandon("expired_locally")
			}()
		}
	}
	wg.Wait()
}

// leaseLost finds out why a renewal skipped a session: the user wants it
// gone (this worker still owns it and carries that out), or it is no
// longer ours (stop the client at once, write nothing).
func (w *Worker) leaseLost(ctx context.Context, h *hosted) {
	if w.hooks.leaseLostChecked != nil {
		defer w.hooks.leaseLostChecked(h.id)
	}
	if h.leaving.Load() {
		// This hosting is releasing or ending the session itself, and
		// stops its client when the write is done (or fenced): nothing
		// was lost, nothing to do.
		return
	}
	qctx, cancel := context.WithTimeout(ctx, writeTimeout)
	s, err := w.deps.Store.Get(qctx, h.id)
	cancel()
	switch {
	case errors.Is(err, store.ErrNotFound):
		h.abandon("deleted")
	case err != nil:
		// Postgres trouble: the local lease clock decides.
	case store.Str(s.WorkerID) == w.cfg.WorkerID && s.LeaseEpoch == h.fence.Epoch && s.DesiredState == store.DesiredGone:
		if err := h.requestEnd(ctx, store.GoneReason("", s.Reason())); err != nil {
			h.log.Warn("end session", "error", err)
		}
	default:
		h.abandon("taken")
	}
}

// restoreOwn takes back the sessions a previous run under this worker id
// hosted (a restart after a crash), without waiting for their leases to
// lapse.
func (w *Worker) restoreOwn(ctx context.Context) {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	owned, err := w.deps.Store.OwnedBy(qctx, w.cfg.WorkerID)
	cancel()
	if err != nil {
		w.log.Warn("list sessions hosted before restart; the reconciler will restore them", "error", err)
		return
	}
	if len(owned) == 0 {
		return
	}
	w.log.Info("restoring sessions this worker hosted before it restarted", "count", len(owned))
	// Their logins then find their LID mappings cached instead of each
	// writing one under the LID map's process-wide lock (wa/lids.go).
	jids := make([]string, 0, len(owned))
	for _, s := range owned {
		if s.DeviceJID != nil {
			jids = append(jids, *s.DeviceJID)
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := w.deps.Host.PrimeLIDs(pctx, jids); err != nil {
		w.log.Warn("read LID mappings before restoring; each login stores its own", "error", err)
	}
	cancel()
	var wg sync.WaitGroup
	for _, s := range owned {
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			hctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			if err := w.host(hctx, s.SessionID); err != nil && !errors.Is(err, errSkipped) {
				w.log.Warn("restore own session", "session_id", s.SessionID, "error", err)
			}
		}()
	}
	wg.Wait()
}

// Shutdown hands every hosted session over to the other workers: each
// client is disconnected without logging out, its lease released and a
// restore (or, for a session still pairing, a new create) enqueued on the
// shared queue. Call it after the asynq server stopped taking tasks; new
// sessions are refused from here on.
func (w *Worker) Shutdown(ctx context.Context) {
	w.mu.Lock()
	w.closing = true
	w.mu.Unlock()
	hs := w.snapshot()
	if len(hs) > 0 {
		w.log.Info("handing sessions over to other workers", "count", len(hs))
	}
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			done := make(chan struct{})
			if !h.send(cmdHandoff{done: done}) {
				return
			}
			// The slot is free once the session stopped being hosted here
			// (h.ctx ends when its lease was released): the takeover
			// enqueue that follows may wait on Redis, and the next session
			// need not wait for it (TestShutdownHandsOffEverySessionWhenRedisHangs).
			select {
			case <-done:
			case <-h.ctx.Done():
			case <-ctx.Done():
				h.abandon("shutdown_timeout")
			}
		}()
	}
	wg.Wait()
	// Whatever is left (a loop stuck past the deadline) is stopped hard.
	for _, h := range w.snapshot() {
		h.stop()
	}
	w.wg.Wait()
	// The last status events go out before the process exits, unless
	// Redis is away: then they could not, and waiting would only spend
	// the budget.
	fctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	w.events.flush(fctx)
}

// flushTimeout bounds Shutdown's wait for queued events to reach Redis.
const flushTimeout = 2 * time.Second
