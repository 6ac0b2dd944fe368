package worker

import (
	"context"
	"math/rand/v2"
	"time"

	wastore "go.mau.fi/whatsmeow/store"
	waevents "go.mau.fi/whatsmeow/types/events"

	"wasessions/internal/events"
	"wasessions/internal/store"
	"wasessions/tasks"
)

// Recovery: a linked session (its keys in Postgres) ends for good only when
// WhatsApp logs it out or its user disconnects it. Every other failure keeps
// the device and the session comes back by itself, with the reason visible
// in its status:
//
//   - a lost or refused connection (network errors, 5xx, keepalive
//     timeouts, other connect failures): the session loop reconnects with
//     capped exponential backoff and jitter (whatsmeow's own auto-reconnect
//     is off, so there is one reconnect mechanism, which also cannot outlive
//     the hosting); after ReleaseAfter without a connection the session is
//     released to another worker, whose path to WhatsApp may be fine;
//   - ClientOutdated (405): the worker fetches the current client version;
//     if it changed the session reconnects at once, else it waits with
//     reason client_outdated and capped backoff (metric
//     wasessions_worker_sessions_waiting{reason="client_outdated"});
//   - TemporaryBan (402): reason temporary_ban and the ban's end in
//     banned_until; no attempt until then, wherever the session is hosted.

// What a session without a connection waits on: the label of the
// waiting-sessions gauge.
const (
	waitUnreachable    = string(store.ReasonUnreachable)
	waitClientOutdated = string(store.ReasonClientOutdated)
	waitTemporaryBan   = string(store.ReasonTemporaryBan)
)

// Loop messages of the recovery.
type (
	// retryConnect is a backoff or ban timer that fired; gen discards
	// timers superseded by a later decision.
	retryConnect struct{ gen int }
	// versionChecked is the answer to a version refresh after a 405.
	versionChecked struct {
		changed bool
		err     error
	}
	// releaseCheck fires ReleaseAfter after the connection was lost.
	releaseCheck struct{ gen int }
	// banWait starts hosting a session that is still banned.
	banWait struct{ until time.Time }
	// dialFailed: the first dial of a restored session failed.
	dialFailed struct{ err error }
)

// retryBase is the first reconnect delay after a failure.
const retryBase = time.Second

// versionMinAge coalesces the version refreshes of many sessions that hit
// ClientOutdated at once into one fetch.
const versionMinAge = 10 * time.Second

// backoff is the delay before reconnect attempt n (1, 2, ...): exponential
// from retryBase, capped at RetryMax, with "equal jitter" (half fixed, half
// random) so that sessions refused together do not come back together.
func (w *Worker) backoff(n int) time.Duration {
	d := w.cfg.RetryMax
	if n < 30 {
		d = min(retryBase<<(n-1), w.cfg.RetryMax)
	}
	return d/2 + rand.N(d/2+1)
}

// setWaiting records what the session is waiting on ("" for nothing) in the
// waiting-sessions gauge.
func (h *hosted) setWaiting(reason string) {
	h.mu.Lock()
	old := h.waiting
	h.waiting = reason
	h.mu.Unlock()
	if old == reason {
		return
	}
	if old != "" {
		h.w.deps.Metrics.Waiting.WithLabelValues(old).Dec()
	}
	if reason != "" {
		h.w.deps.Metrics.Waiting.WithLabelValues(reason).Inc()
	}
}

// scheduleRetry reconnects after d; a later schedule or a connection
// cancels it.
func (h *hosted) scheduleRetry(d time.Duration) {
	h.retryGen++
	if h.retryTimer != nil {
		h.retryTimer.Stop()
	}
	gen := h.retryGen
	h.retryTimer = time.AfterFunc(d, func() { h.send(retryConnect{gen: gen}) })
}

// watchRelease starts the clock that releases the session if it stays
// without a connection for ReleaseAfter; it keeps running if already on.
func (h *hosted) watchRelease() {
	if h.releaseTimer != nil {
		return
	}
	gen := h.releaseGen
	h.releaseTimer = time.AfterFunc(h.w.cfg.ReleaseAfter, func() { h.send(releaseCheck{gen: gen}) })
}

// connectionUp resets the recovery state: timers off, nothing waited on.
func (h *hosted) connectionUp() {
	h.up = true
	h.failures = 0
	h.retryGen++
	if h.retryTimer != nil {
		h.retryTimer.Stop()
		h.retryTimer = nil
	}
	h.stopReleaseWatch()
	h.setWaiting("")
}

func (h *hosted) stopReleaseWatch() {
	h.releaseGen++
	if h.releaseTimer != nil {
		h.releaseTimer.Stop()
		h.releaseTimer = nil
	}
}

// stopRecovery stops the timers when hosting ends.
func (h *hosted) stopRecovery() {
	if h.retryTimer != nil {
		h.retryTimer.Stop()
	}
	if h.releaseTimer != nil {
		h.releaseTimer.Stop()
	}
	h.setWaiting("")
}

// connectionDown handles a lost or refused connection of a linked session:
// status reconnecting with reason, a backoff retry, and the release clock.
func (h *hosted) connectionDown(reason store.Reason, lastErr store.ErrorCode) {
	h.up = false
	h.failures++
	d := h.w.backoff(h.failures)
	h.setWaiting(waitUnreachable)
	h.write(events.TypeStatus, func(ctx context.Context) (store.Session, error) {
		return h.w.deps.Store.MarkReconnecting(ctx, h.fence, reason, lastErr)
	})
	h.watchRelease()
	h.scheduleRetry(d)
	h.log.Info("no connection; reconnecting", "reason", reason, "attempt", h.failures, "retry_in", d.Round(time.Millisecond))
}

// reconnect is one attempt: a dial that fails is retried with backoff; a
// refusal after the dial arrives as an event. Called only while the
// session has no connection (h.up is false).
func (h *hosted) reconnect() {
	// A refused socket can still be open (the server lingers so the client
	// reads why): close it first, or Connect would find it "connected".
	h.client.Disconnect()
	err := h.connectClient()
	switch {
	case err == nil:
	case h.isStopped():
	default:
		h.log.Warn("could not reach WhatsApp", "error", err)
		h.connectionDown(store.ReasonConnectFailed, store.ErrServerUnreachable)
	}
}

// onClientOutdated: WhatsApp refused the client version (405). Ask for the
// current version; the answer comes back as versionChecked.
func (h *hosted) onClientOutdated() {
	h.up = false
	h.setWaiting(waitClientOutdated)
	h.stopReleaseWatch() // every worker announces the same version: moving does not help
	seen := h.announced()
	versions := h.w.deps.Host.Versions()
	h.log.Warn("WhatsApp refused the client version as outdated; fetching the current one", "version", seen.String())
	go func() {
		ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
		defer cancel()
		changed, err := versions.Refresh(ctx, seen, versionMinAge)
		h.send(versionChecked{changed: changed, err: err})
	}()
}

// refreshVersionInBackground asks for the current version without waiting
// for the answer (a pairing refused as outdated: the next one benefits).
func (h *hosted) refreshVersionInBackground() {
	seen, versions := h.announced(), h.w.deps.Host.Versions()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = versions.Refresh(ctx, seen, versionMinAge)
	}()
}

func (h *hosted) onVersionChecked(m versionChecked) {
	if h.waitingOn() != waitClientOutdated {
		return // connected (or banned) meanwhile
	}
	if m.changed {
		h.log.Info("client version changed; reconnecting at once", "version", h.w.deps.Host.Versions().Current().String())
		h.reconnect()
		return
	}
	h.failures++
	d := h.w.backoff(h.failures)
	h.write(events.TypeStatus, func(ctx context.Context) (store.Session, error) {
		return h.w.deps.Store.MarkReconnecting(ctx, h.fence, store.ReasonClientOutdated, store.ErrClientOutdated)
	})
	h.scheduleRetry(d)
	h.log.Warn("client version still refused and no newer one known; retrying", "version", h.announced().String(),
		"fetch_error", m.err, "attempt", h.failures, "retry_in", d.Round(time.Millisecond))
}

// onTemporaryBan: no attempt until the ban ends, then reconnect.
func (h *hosted) onTemporaryBan(e *waevents.TemporaryBan) {
	until := time.Now().Add(e.Expire)
	if e.Expire <= 0 {
		// No expiry given: try again later like any refusal.
		h.failures++
		until = time.Now().Add(h.w.backoff(h.failures))
	}
	h.log.Warn("temporarily banned by WhatsApp", "ban", e.String())
	h.waitBan(until)
}

// waitBan records the ban and schedules the reconnect at its end (plus a
// little jitter, so sessions banned together do not return together).
func (h *hosted) waitBan(until time.Time) {
	h.up = false
	h.setWaiting(waitTemporaryBan)
	h.stopReleaseWatch() // a ban follows the account, not the worker
	h.write(events.TypeStatus, func(ctx context.Context) (store.Session, error) {
		return h.w.deps.Store.MarkBanned(ctx, h.fence, until, store.ErrTemporaryBan)
	})
	d := time.Until(until) + rand.N(time.Second)
	h.scheduleRetry(max(d, 0))
	h.log.Warn("temporarily banned by WhatsApp; waiting", "until", until.UTC().Format(time.RFC3339), "retry_in", d.Round(time.Second))
}

// onReleaseCheck: still without a connection after ReleaseAfter. The
// session goes to another worker (if there is one), whose network path may
// work; the restore there starts with a fresh connection.
func (h *hosted) onReleaseCheck(m releaseCheck) {
	if m.gen != h.releaseGen || h.up {
		return
	}
	h.w.deps.Metrics.UnreachableReleases.Inc()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	queue := h.w.otherWorkerQueue(ctx)
	cancel()
	h.log.Warn("no connection for too long; releasing the session to another worker",
		"without_connection_for", h.w.cfg.ReleaseAfter, "takeover_queue", queue)
	h.releaseTo(store.ReasonUnreachable, store.ErrServerUnreachable, queue)
}

// otherWorkerQueue is the queue of the least loaded other running worker,
// or the shared queue when there is none (or Redis cannot say).
func (w *Worker) otherWorkerQueue(ctx context.Context) string {
	servers, err := w.deps.Enqueuer.Inspector().Servers()
	if err != nil {
		return tasks.QueueShared
	}
	candidates := map[string]bool{}
	for _, srv := range servers {
		if srv.Status != "active" {
			continue
		}
		for q := range srv.Queues {
			if id, ok := tasks.WorkerIDFromQueue(q); ok && id != w.cfg.WorkerID {
				candidates[id] = true
			}
		}
	}
	if len(candidates) == 0 {
		return tasks.QueueShared
	}
	counts, err := w.deps.Store.HostedCounts(ctx)
	if err != nil {
		counts = nil
	}
	best := ""
	for id := range candidates {
		if best == "" || counts[id] < counts[best] || (counts[id] == counts[best] && id < best) {
			best = id
		}
	}
	q, err := tasks.WorkerQueue(best)
	if err != nil {
		return tasks.QueueShared
	}
	return q
}

func (h *hosted) waitingOn() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.waiting
}

// announced is the version the client's last handshake announced.
func (h *hosted) announced() wastore.WAVersionContainer {
	if v := h.lastVersion.Load(); v != nil {
		return *v
	}
	return h.w.deps.Host.Versions().Current()
}
