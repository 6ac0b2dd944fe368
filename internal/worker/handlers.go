package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	wastore "go.mau.fi/whatsmeow/store"
	waevents "go.mau.fi/whatsmeow/types/events"

	"wasessions/internal/cleanup"
	"wasessions/internal/events"
	"wasessions/internal/queue"
	"wasessions/internal/reconcile"
	"wasessions/internal/store"
	"wasessions/internal/wa"
	"wasessions/tasks"
)

// handleCreate starts pairing, or restores when the session already has a
// device (a create delivered again after the phone scanned).
func (w *Worker) handleCreate(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.ParseSession(t)
	if err != nil {
		return err
	}
	return w.host(ctx, p.SessionID)
}

// handleRestore reconnects a linked session from its stored keys.
func (w *Worker) handleRestore(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.ParseSession(t)
	if err != nil {
		return err
	}
	return w.host(ctx, p.SessionID)
}

// restoreJitter spreads restores that come at once (a worker's sessions
// after it died) over this much time, so they do not connect in lockstep.
const restoreJitter = 200 * time.Millisecond

// Connect attempts for a new pairing before the session is declared failed.
var pairConnectBackoff = []time.Duration{0, time.Second, 2 * time.Second}

// host claims the session and starts a client for it: from its stored
// device when it has one (no QR), else a new pairing. It returns once the
// client has shown a QR code, connected, or ended, the client itself living
// on in the registry.
func (w *Worker) host(ctx context.Context, sessionID string) error {
	if !w.begin(sessionID) {
		return errSkipped
	}
	defer w.finish(sessionID)
	if w.lookup(sessionID) != nil {
		return errSkipped // already hosted here: a repeated delivery
	}
	if w.Hosted() >= w.cfg.MaxSessions {
		return errWorkerFull // retried later, maybe by another worker
	}

	// Pace restores: a bounded number connect at once, with jitter, so a
	// thousand sessions coming back do not storm the server. The wait comes
	// before the claim: a lease is renewed only once its client is in the
	// registry, so a claim made first would run out while it queued for a
	// slot, and its client would be stopped by the fence check right after
	// connecting (and the session restored again).
	cur, err := w.deps.Store.Get(ctx, sessionID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errSkipped
	case err != nil:
		return err
	}
	var phases restorePhases
	phases.mark("")
	if cur.DeviceJID != nil && cur.Status.Live() && cur.DesiredState == store.DesiredLinked {
		select {
		case w.restoreSlots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		phases.mark("wait")
		defer func() { <-w.restoreSlots }()
		w.deps.Metrics.RestoresInFlight.Inc()
		defer w.deps.Metrics.RestoresInFlight.Dec()
		select {
		case <-time.After(rand.N(restoreJitter)):
		case <-ctx.Done():
			return ctx.Err()
		}
		phases.mark("jitter")
	}

	sent := time.Now()
	sess, fence, err := w.deps.Store.Claim(ctx, sessionID, w.cfg.WorkerID, w.cfg.LeaseTTL, store.ClaimToHost)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrNotClaimable), errors.Is(err, store.ErrLeaseHeld):
		return errSkipped
	case err != nil:
		return err
	}
	log := w.log.With("session_id", sessionID)
	linked := sess.DeviceJID != nil

	var dev *wastore.Device
	if !linked {
		dev = w.deps.Host.NewDevice() // fresh keys, saved by whatsmeow once paired
	} else {
		dev, err = w.deps.Host.LoadDevice(ctx, *sess.DeviceJID)
		if err != nil {
			log.Warn("restore: could not load the device's keys", "error", err)
			w.releaseClaim(fence, store.ReasonRestoreFailed, store.ErrRestoreFailed)
			return err
		}
		if dev == nil {
			// Keys gone (unlinked elsewhere, or deleted): only a new scan helps.
			s, err := w.deps.Store.End(ctx, fence, store.Ending{Reason: store.ReasonDeviceKeysMissing,
				LastError: store.ErrDeviceKeysMissing, KeysDeleted: true})
			if err == nil {
				w.publish(events.TypeStatus, s)
			}
			return err
		}
	}

	h := newHosted(w, sess, fence, sent.Add(w.cfg.LeaseTTL), linked)
	client, err := w.deps.Host.NewClient(dev, log, wa.ClientOptions{
		Proxy:       store.Str(sess.ProxyURL),
		OnHandshake: func(v wastore.WAVersionContainer) { h.lastVersion.Store(&v) },
	})
	if err != nil {
		// Only a proxy the admin route let through and this build cannot
		// use: the session stays put for the reconciler, the log says why.
		log.Warn("client cannot be built; released", "error", err)
		w.releaseClaim(fence, store.ReasonRestoreFailed, store.ErrRestoreFailed)
		return err
	}
	h.setClient(client)
	if err := w.add(h); err != nil {
		w.releaseClaim(fence, store.ReasonWorkerUnavailable, "")
		return err
	}
	h.start()
	if !linked {
		qr, err := h.client.GetQRChannel(h.ctx)
		if err != nil {
			h.end(store.Ending{Reason: store.ReasonPairError, LastError: store.ErrPairingFailed}, err)
			return nil
		}
		go h.pumpQR(qr)
	}

	if linked && sess.BannedUntil != nil && time.Until(*sess.BannedUntil) > 0 {
		// Banned when another worker hosted it: wait the ban out here.
		h.send(banWait{until: *sess.BannedUntil})
		log.Info("session is temporarily banned; waiting before connecting", "until", sess.BannedUntil.UTC().Format(time.RFC3339))
		return nil
	}
	phases.mark("claim")
	if err := w.connect(ctx, h, linked); err != nil {
		if errors.Is(err, errHostingEnded) {
			// Stopped before it was up (a handoff, a lost lease): its
			// state is written by whoever stopped it.
			log.Info("hosting ended before the client connected")
			return nil
		}
		if linked {
			// The session loop retries with backoff and, if WhatsApp stays
			// out of reach, hands the session to another worker.
			h.send(dialFailed{err: err})
			w.deps.Metrics.Restores.WithLabelValues("retrying").Inc()
			log.Warn("restore could not reach WhatsApp; retrying", "error", err)
			return nil
		}
		h.end(store.Ending{Reason: store.ReasonConnectFailed, LastError: store.ErrServerUnreachable}, err)
		return nil
	}

	phases.mark("handshake")
	timer := time.NewTimer(w.cfg.ConnectTimeout)
	defer timer.Stop()
	select {
	case err := <-h.first:
		if linked {
			outcome := "connected"
			if err != nil {
				outcome = "failed"
			}
			w.deps.Metrics.Restores.WithLabelValues(outcome).Inc()
			if err == nil {
				if at := h.connectedAt.Load(); at != 0 {
					phases.markAt("login", time.Unix(0, at))
				}
				phases.mark("mark")
				phases.observe(w.deps.Metrics.RestorePhases)
				if kind, since, ok := takeoverStart(cur, w.cfg.LeaseTTL); ok {
					w.deps.Metrics.Takeover.WithLabelValues(kind).Observe(time.Since(since).Seconds())
				}
			}
		}
	case <-timer.C:
		// Still trying (whatsmeow reconnects on its own); the client stays.
		log.Warn("client not ready yet; leaving it to reconnect", "waited", w.cfg.ConnectTimeout)
	case <-ctx.Done():
	}
	if w.hooks.hostReturns != nil {
		w.hooks.hostReturns(sessionID)
	}
	return nil
}

// restorePhases times the phases of one restore (Metrics.RestorePhases).
type restorePhases struct {
	last  time.Time
	names []string
	took  []time.Duration
}

// mark ends the phase called name now ("" starts the clock).
func (p *restorePhases) mark(name string) { p.markAt(name, time.Now()) }

func (p *restorePhases) markAt(name string, at time.Time) {
	if name != "" && !p.last.IsZero() {
		p.names = append(p.names, name)
		p.took = append(p.took, at.Sub(p.last))
	}
	p.last = at
}

func (p *restorePhases) observe(h *prometheus.HistogramVec) {
	for i, name := range p.names {
		h.WithLabelValues(name).Observe(p.took[i].Seconds())
	}
}

// takeoverStart says when the session, as read before the claim, lost
// its previous client: released by its worker (handoff: the release's
// write), or left behind by a worker whose lease lapsed (failover: its last
// heartbeat, the lease end minus one LEASE_TTL). A session that was never
// hosted or is still leased to someone else is no takeover.
func takeoverStart(prev store.Session, leaseTTL time.Duration) (string, time.Time, bool) {
	switch {
	case prev.WorkerID == nil && prev.Status == store.StatusReconnecting:
		return "handoff", prev.UpdatedAt, true
	case prev.WorkerID != nil && prev.LeaseUntil != nil && !prev.LeaseLive:
		return "failover", prev.LeaseUntil.Add(-leaseTTL), true
	}
	return "", time.Time{}, false
}

// connect dials the server. A new pairing retries a few times before
// giving up; a linked device's first failure goes back to the caller,
// which hands it to the session loop's backoff.
func (w *Worker) connect(ctx context.Context, h *hosted, linked bool) error {
	var err error
	for i, d := range pairConnectBackoff {
		if d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return ctx.Err()
			case <-h.ctx.Done():
				return errHostingEnded
			}
		}
		if err = h.connectClient(); err == nil || linked || errors.Is(err, errHostingEnded) {
			return err
		}
		h.log.Warn("connect failed", "attempt", i+1, "error", err)
	}
	return err
}

// releaseClaim gives a just-claimed lease back after a failure before any
// client existed.
func (w *Worker) releaseClaim(f store.Fence, reason store.Reason, lastErr store.ErrorCode) {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if s, err := w.deps.Store.Release(ctx, f, reason, lastErr); err == nil {
		w.publish(events.TypeStatus, s)
	}
}

// handleDisconnect carries out a session the user (or expiry) wants gone.
func (w *Worker) handleDisconnect(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.ParseSession(t)
	if err != nil {
		return err
	}
	if h := w.lookup(p.SessionID); h != nil {
		return h.requestEnd(ctx, store.GoneReason(store.Reason(p.Reason), ""))
	}
	if !w.begin(p.SessionID) {
		return fmt.Errorf("session %s is being claimed by this worker; retry", p.SessionID)
	}
	defer w.finish(p.SessionID)
	if h := w.lookup(p.SessionID); h != nil {
		return h.requestEnd(ctx, store.GoneReason(store.Reason(p.Reason), ""))
	}
	sent := time.Now()
	sess, fence, err := w.deps.Store.Claim(ctx, p.SessionID, w.cfg.WorkerID, w.cfg.LeaseTTL, store.ClaimToEnd)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrNotClaimable):
		return errSkipped
	case errors.Is(err, store.ErrLeaseHeld):
		// Another worker holds the client: forward it to that worker's
		// queue (its heartbeat would also notice, within LEASE_TTL/3).
		j, err := tasks.NewDisconnect(p.SessionID, p.Reason, queue.ForSession(sess))
		if err != nil {
			return err
		}
		_, err = w.deps.Enqueuer.Enqueue(ctx, j, false)
		return err
	case err != nil:
		return err
	}
	reason := store.GoneReason(store.Reason(p.Reason), sess.Reason())
	log := w.log.With("session_id", p.SessionID)
	ending := store.Ending{Reason: reason, KeysDeleted: true}
	// Nobody else may log the device out or delete its keys meanwhile: the
	// claim is extended while the logout runs, and everything below stops
	// if it is lost.
	ctx, unhold := w.holdClaim(ctx, fence, sent)
	defer unhold()

	if sess.DeviceJID != nil {
		if err := w.logoutUnhosted(ctx, *sess.DeviceJID, store.Str(sess.ProxyURL)); err != nil {
			if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
				err = fmt.Errorf("%w (%w)", err, cause)
			}
			retry, _ := asynq.GetRetryCount(ctx)
			maxRetry, _ := asynq.GetMaxRetry(ctx)
			if retry < maxRetry {
				// Keep the keys and try again later: the phone should lose
				// the device from its list, which needs WhatsApp's answer.
				log.Warn("logout not confirmed; retrying later", "error", err)
				if _, uerr := w.deps.Store.Unlease(ctx, fence, store.ErrLogoutPending); uerr != nil {
					log.Warn("unlease after failed logout", "error", uerr)
				}
				return fmt.Errorf("log out device: %w", err)
			}
			ending.LastError = store.ErrLogoutUnconfirmed
			log.Warn("logout not confirmed after all retries; deleting keys locally", "error", err)
		}
		if err := w.deps.Store.DeleteDeviceKeys(ctx, *sess.DeviceJID); err != nil {
			return err
		}
	}
	s, err := w.deps.Store.End(ctx, fence, ending)
	if err != nil {
		return err
	}
	w.publish(events.TypeStatus, s)
	log.Info("session ended", "status", s.Status, "reason", reason)
	return nil
}

// logoutUnhosted connects a stored device just long enough to log it out.
func (w *Worker) logoutUnhosted(ctx context.Context, deviceJID, proxy string) error {
	dev, err := w.deps.Host.LoadDevice(ctx, deviceJID)
	if err != nil {
		return err
	}
	if dev == nil {
		return nil // keys already gone
	}
	cli, err := w.deps.Host.NewClient(dev, w.log.With("device_purpose", "logout"), wa.ClientOptions{Proxy: proxy})
	if err != nil {
		return err
	}
	ready := make(chan error, 1)
	cli.AddEventHandler(func(evt any) {
		switch e := evt.(type) {
		case *waevents.Connected:
			select {
			case ready <- nil:
			default:
			}
		case *waevents.LoggedOut:
			select {
			case ready <- errAlreadyLoggedOut:
			default:
			}
		case *waevents.ConnectFailure:
			select {
			case ready <- fmt.Errorf("connect failure: %s", e.Reason):
			default:
			}
		}
	})
	defer cli.Disconnect()
	if err := cli.Connect(); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	select {
	case err := <-ready:
		if errors.Is(err, errAlreadyLoggedOut) {
			return nil // the phone unlinked it already; whatsmeow deleted the keys
		}
		if err != nil {
			return err
		}
	case <-time.After(logoutTimeout):
		return errors.New("timed out waiting for login")
	case <-ctx.Done():
		return ctx.Err()
	}
	lctx, cancel := context.WithTimeout(ctx, logoutTimeout)
	defer cancel()
	return cli.Logout(lctx)
}

var errAlreadyLoggedOut = errors.New("already logged out")

// requestEnd asks the session's loop to log out and end it, and waits.
func (h *hosted) requestEnd(ctx context.Context, reason store.Reason) error {
	done := make(chan struct{})
	_, err := h.command(ctx, cmdEnd{reason: reason, done: done}, done) // not sent: hosting ended meanwhile; the row says how
	return err
}

// command hands cmd to the session's loop and waits until the loop closes
// done, the hosting ends, or ctx ends. sent is false when the hosting had
// ended before cmd could be handed over.
func (h *hosted) command(ctx context.Context, cmd any, done <-chan struct{}) (sent bool, err error) {
	if !h.send(cmd) {
		return false, nil
	}
	select {
	case <-done:
	case <-h.done:
	case <-ctx.Done():
		return true, ctx.Err()
	}
	return true, nil
}

// handleHandoff moves a session this worker hosts to another worker
// (rebalancing, see reconcile.Rebalance).
func (w *Worker) handleHandoff(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.ParseHandoff(t)
	if err != nil {
		return err
	}
	h := w.lookup(p.SessionID)
	if h == nil || p.To == w.cfg.WorkerID {
		return errSkipped // not here any more (ended, or moved already)
	}
	done := make(chan struct{})
	sent, err := h.command(ctx, cmdHandoff{to: p.To, done: done}, done)
	if !sent {
		return errSkipped
	}
	return err
}

// handleReconcile runs one reconcile pass (see internal/reconcile).
func (w *Worker) handleReconcile(ctx context.Context, t *asynq.Task) error {
	res, err := reconcile.Run(ctx, reconcile.Deps{Store: w.deps.Store, Enqueuer: w.deps.Enqueuer, Bus: w.deps.Bus, Log: w.log,
		MaxMoves: w.cfg.RebalanceMaxMoves, MessageTTL: w.cfg.MessageTTL})
	if err != nil {
		return err
	}
	if res != (reconcile.Result{}) {
		w.log.InfoContext(ctx, "reconciled", "expired", res.Expired, "creates", res.Creates, "restores", res.Restores,
			"disconnects", res.Disconnects, "already_queued", res.AlreadyQueued, "reaped_queues", res.ReapedQueues,
			"moves", res.Moves, "messages_failed", res.MessagesFailed, "senders_woken", res.SendersWoken)
	}
	return nil
}

// handleCleanup runs one cleanup pass (see internal/cleanup).
func (w *Worker) handleCleanup(ctx context.Context, t *asynq.Task) error {
	_, err := cleanup.Run(ctx, cleanup.Deps{Store: w.deps.Store, Enqueuer: w.deps.Enqueuer, Bus: w.deps.Bus, Log: w.log},
		cleanup.Options{MessageRetention: w.cfg.MessageRetention})
	return err
}
