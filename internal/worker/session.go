package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"go.mau.fi/whatsmeow"
	wastore "go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	waevents "go.mau.fi/whatsmeow/types/events"

	"wasessions/internal/events"
	"wasessions/internal/qrpng"
	"wasessions/internal/store"
	"wasessions/internal/wa"
	"wasessions/tasks"
)

// hosted is one session whose whatsmeow client lives in this worker. All
// that happens to it (whatsmeow events, QR codes, end and handoff commands)
// goes through inbox and is handled by one goroutine, in order.
type hosted struct {
	w         *Worker
	id        string
	userID    string
	fence     store.Fence
	client    *whatsmeow.Client
	log       *slog.Logger
	restored  bool   // hosting began from stored keys, not a new pairing
	pairPhone string // phone-number pairing instead of a QR

	inbox  chan any
	ctx    context.Context // ends when hosting ends
	cancel context.CancelFunc
	// clientCtx is the client's BackgroundEventCtx; clientStop ends it
	// (see stop).
	clientCtx  context.Context
	clientStop context.CancelFunc
	done       chan struct{} // closed when the loop has exited

	// first reports the first milestone to the handler that started
	// hosting: nil once a QR/pairing code is shown or the client is
	// connected, an error if hosting ended before that.
	first     chan error
	firstOnce sync.Once

	mu         sync.Mutex
	validUntil time.Time // by this process's monotonic clock
	stopped    bool
	waiting    string // what a session without a connection waits on (recovery.go)

	// lastVersion is the client version the last handshake announced
	// (written by whatsmeow's goroutine, see wa.ClientOptions).
	lastVersion atomic.Pointer[wastore.WAVersionContainer]

	// leaving is set when this hosting gives its lease up itself (a
	// release or an end), before the write that does it: a heartbeat
	// that runs after that write commits finds the lease gone, and must
	// not report as lost (log, leases_lost metric) what was handed over
	// on purpose. See leaseLost.
	leaving atomic.Bool

	// The outbox sender (messages.go): woken through outboxWake; sending
	// is held while a message is between SendMessage and its recorded ack;
	// outboxClosed stops it taking more (handoff, end). recipients is the
	// sender goroutine's own cache of contact lookups.
	outboxWake   chan struct{}
	outboxClosed atomic.Bool
	sending      chan struct{}
	recipients   map[string]types.JID
	// statusMu is held from a write of messages' statuses to the publish
	// of its events (markSent, receipts, failures, expiries), so that the
	// stream shows a message's statuses in the order Postgres recorded
	// them: the sender records the ack and whatsmeow's goroutine the
	// receipts, and the one that committed first could publish second.
	statusMu     sync.Mutex
	connectedAt  atomic.Int64 // unix nanoseconds of the last Connected
	historyRetry atomic.Bool  // a recoverHistory is waiting to run

	// Loop-goroutine state.
	//
	// deviceJID is the linked device, once there is one: from the row when
	// hosting began from stored keys, from PairSuccess or the first
	// Connected otherwise. The loop keeps its own copy instead of reading
	// client.Store.ID, which whatsmeow writes from its own goroutines: on
	// an unlink it clears it (Store.Delete) while the LoggedOut event is
	// already on its way here.
	deviceJID       string
	connectedBefore bool
	codeRequested   bool
	loginTimer      *time.Timer

	// Recovery state (recovery.go), loop goroutine only. up: logged in
	// and not lost since (whatsmeow's IsLoggedIn stays true after a
	// dropped socket).
	up           bool
	failures     int // consecutive failed attempts since the last connection
	retryTimer   *time.Timer
	retryGen     int
	releaseTimer *time.Timer
	releaseGen   int
}

// Inbox messages other than whatsmeow events.
// Timeouts of the calls a hosted session makes outside a task's context.
const (
	// writeTimeout bounds one state write (and a lease lookup) in Postgres.
	writeTimeout = 5 * time.Second
	// logoutTimeout bounds each step of a logout: waiting for the login
	// (an unhosted device) and WhatsApp's answer to the logout.
	logoutTimeout = 15 * time.Second
	// pairingCodeTimeout bounds WhatsApp's answer to a pairing-code request.
	pairingCodeTimeout = 20 * time.Second
)

type (
	qrItem       struct{ whatsmeow.QRChannelItem }
	loginTimeout struct{}
	cmdEnd       struct {
		reason store.Reason
		done   chan struct{}
	}
	// cmdHandoff hands the session to another worker: to names it
	// (rebalancing), "" means any (shutdown).
	cmdHandoff struct {
		to   string
		done chan struct{}
	}
)

// newHosted builds the hosting; its client is set with setClient before
// start (the client's options refer to the hosting).
func newHosted(w *Worker, sess store.Session, fence store.Fence, validUntil time.Time, restored bool) *hosted {
	ctx, cancel := context.WithCancel(context.Background())
	clientCtx, clientCancel := context.WithCancel(context.Background())
	return &hosted{
		w:          w,
		id:         sess.SessionID,
		userID:     sess.UserID,
		fence:      fence,
		log:        w.log.With("session_id", sess.SessionID),
		restored:   restored,
		pairPhone:  store.Str(sess.PairPhone),
		deviceJID:  store.Str(sess.DeviceJID),
		inbox:      make(chan any, 64),
		ctx:        ctx,
		cancel:     cancel,
		clientCtx:  clientCtx,
		clientStop: clientCancel,
		done:       make(chan struct{}),
		first:      make(chan error, 1),
		validUntil: validUntil,
		outboxWake: make(chan struct{}, 1),
		sending:    make(chan struct{}, 1),
		recipients: map[string]types.JID{},
	}
}

// setClient gives the hosting its client. whatsmeow's Connect, and the
// reconnects it starts by itself, use the client's BackgroundEventCtx:
// it is the hosting's clientCtx, which ends when hosting does (see stop).
func (h *hosted) setClient(c *whatsmeow.Client) {
	c.BackgroundEventCtx = h.clientCtx
	h.client = c
}

// start runs the loop and subscribes it to the client's events.
func (h *hosted) start() {
	h.client.AddEventHandler(func(evt any) {
		switch evt.(type) {
		case *waevents.PairSuccess, *waevents.PairError, *waevents.Connected, *waevents.Disconnected,
			*waevents.LoggedOut, *waevents.StreamReplaced, *waevents.TemporaryBan, *waevents.ClientOutdated,
			*waevents.ConnectFailure, *waevents.PushNameSetting, *waevents.KeepAliveTimeout,
			*waevents.KeepAliveRestored, *waevents.StreamError:
			if h.w.hooks.beforeEvent != nil {
				h.w.hooks.beforeEvent(evt)
			}
			h.send(evt)
		}
	})
	h.client.AddEventHandlerWithSuccessStatus(h.onWAEvent)
	h.w.wg.Add(1)
	go h.runOutbox()
	h.w.wg.Add(1)
	go func() {
		defer h.w.wg.Done()
		defer close(h.done)
		for {
			select {
			case <-h.ctx.Done():
				return
			case m := <-h.inbox:
				h.handle(m)
			}
		}
	}()
}

// send queues m for the loop; it gives up once hosting has ended.
func (h *hosted) send(m any) bool {
	select {
	case h.inbox <- m:
		return true
	case <-h.ctx.Done():
		return false
	}
}

// pumpQR feeds whatsmeow's QR channel into the loop.
func (h *hosted) pumpQR(ch <-chan whatsmeow.QRChannelItem) {
	for item := range ch {
		if !h.send(qrItem{item}) {
			return
		}
	}
}

func (h *hosted) signalFirst(err error) {
	h.firstOnce.Do(func() { h.first <- err })
}

func (h *hosted) extend(until time.Time) {
	h.mu.Lock()
	if until.After(h.validUntil) {
		h.validUntil = until
	}
	h.mu.Unlock()
}

func (h *hosted) expiresBefore(t time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.stopped && h.validUntil.Before(t)
}

// stop ends hosting: the client is disconnected (never logged out), the
// session leaves the registry, the loop exits. Safe to call more than once
// and from the loop itself.
func (h *hosted) stop() {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return
	}
	h.stopped = true
	h.mu.Unlock()
	// Right after the Disconnect, the client's background context ends:
	// whatsmeow's own reconnects (auto-reconnect, the one after stream
	// error 515) dial with it, so none can log the client in again and
	// replace the next owner's connection. Both contexts end only after
	// the Disconnect: the socket's read pump and the QR channel watch them,
	// and woken first they would close the socket concurrently with
	// Disconnect, which races inside whatsmeow. The loop's login timer is
	// left alone (it belongs to the loop, and fires into an inbox nobody
	// reads any more).
	h.client.Disconnect()
	h.clientStop()
	h.client.RemoveEventHandlers()
	h.setWaiting("")
	h.w.remove(h)
	h.cancel()
	h.signalFirst(errors.New("hosting ended"))
}

// errHostingEnded: the session stopped being hosted here before its
// client connected.
var errHostingEnded = errors.New("hosting ended")

// connectClient dials, unless hosting has already ended. stop can run at any
// moment, from the loop (a handoff), the heartbeat (a lost lease) or the
// fence check. If it runs while Connect dials, whatsmeow's Disconnect waits
// for the dial and closes it; but if it ran just before Connect began, the
// client would connect after its Disconnect, and stay connected with no one
// hosting it and no lease: a second client the moment another worker
// restores the session. Hence the check on both sides of Connect.
func (h *hosted) connectClient() error {
	if h.isStopped() {
		return errHostingEnded
	}
	err := h.client.Connect()
	if h.isStopped() {
		h.client.Disconnect()
		return errHostingEnded
	}
	return err
}

func (h *hosted) isStopped() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stopped
}

// abandon stops the client without writing anything: the lease is lost,
// so this worker has no right to touch the row any more.
func (h *hosted) abandon(cause string) {
	h.mu.Lock()
	already := h.stopped
	h.mu.Unlock()
	if already {
		return
	}
	h.w.deps.Metrics.LeasesLost.WithLabelValues(cause).Inc()
	h.log.Warn("lease lost: client stopped", "cause", cause, "lease_epoch", h.fence.Epoch)
	h.stop()
}

// Retry pacing of a session state write that failed (each attempt bounded
// by writeTimeout).
const (
	writeBackoff    = 100 * time.Millisecond
	writeMaxBackoff = 2 * time.Second
)

// write runs one fenced transition, publishes the resulting row as an event
// of type typ ("" for none) and reports whether it applied. A write that
// fails is retried until it applies, is fenced, or hosting ends: a state
// change dropped during a Postgres restart would leave the row disagreeing
// with the client for good (a linked session shown as "qr" without its
// device, re-paired at the next handoff; a restored one left
// "reconnecting", its expiry no longer sliding). The wait is bounded all
// the same: while Postgres is away the heartbeat fails too, and the fence
// check (or Shutdown's deadline) ends hosting, which cancels h.ctx. A
// fenced write means the lease is gone: the client is abandoned at once.
func (h *hosted) write(typ string, f func(context.Context) (store.Session, error)) (store.Session, bool) {
	var (
		s   store.Session
		err error
	)
	backoff := writeBackoff
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(h.ctx, writeTimeout)
		s, err = f(ctx)
		cancel()
		if err == nil || errors.Is(err, store.ErrFenced) {
			break
		}
		if attempt == 1 {
			h.log.Warn("session state write failed; retrying until it applies or hosting ends", "error", err)
		}
		select {
		case <-h.ctx.Done():
			h.log.Error("session state write given up: hosting ended", "error", err, "attempts", attempt)
			return s, false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, writeMaxBackoff)
	}
	if errors.Is(err, store.ErrFenced) {
		h.abandon("fenced")
		return s, false
	}
	h.w.deps.Metrics.StatusChanges.WithLabelValues(string(s.Status), store.Str(s.StatusReason)).Inc()
	if typ != "" {
		h.w.publish(typ, s)
	}
	return s, true
}

// end writes the session's final state and stops hosting. cause, the raw
// error behind e.LastError if any, is logged and never stored (users see
// the code's sentence).
func (h *hosted) end(e store.Ending, cause error) {
	h.leaving.Store(true)
	h.closeOutbox()
	h.client.Disconnect()
	if s, ok := h.write(events.TypeStatus, func(ctx context.Context) (store.Session, error) {
		return h.w.deps.Store.End(ctx, h.fence, e)
	}); ok {
		attrs := []any{"status", s.Status, "reason", e.Reason}
		if e.LastError != "" {
			attrs = append(attrs, "last_error", e.LastError)
		}
		if cause != nil {
			attrs = append(attrs, "error", cause)
		}
		h.log.Info("session ended", attrs...)
	}
	if h.w.hooks.afterLeaveWrite != nil {
		h.w.hooks.afterLeaveWrite(h.id)
	}
	h.stop()
}

func (h *hosted) handle(m any) {
	switch e := m.(type) {
	case qrItem:
		h.onQR(e.QRChannelItem)
	case loginTimeout:
		if !h.connectedBefore {
			h.release(store.ReasonConnectFailed, store.ErrLoginIncomplete)
		}
	case cmdEnd:
		h.onEnd(e.reason)
		close(e.done)
	case cmdHandoff:
		// No target worker (shutdown): any worker takes it over.
		to, noTarget := tasks.WorkerQueue(e.to)
		switch {
		case noTarget != nil:
			h.release(store.ReasonWorkerShutdown, "")
		case h.deviceJID != "" && h.connectedBefore:
			h.releaseTo(store.ReasonRebalance, "", to)
		default:
			// Still pairing or not yet logged in: moving it would cost the
			// user a new QR or a longer outage. Stays here.
			h.log.Info("not moved: session is not connected yet", "to_worker", e.to)
		}
		close(e.done)

	case *waevents.PairSuccess:
		h.log.Info("paired", "platform", e.Platform)
		h.deviceJID = e.ID.String()
		h.loginTimer = time.AfterFunc(h.w.cfg.ConnectTimeout, func() { h.send(loginTimeout{}) })
		h.write("", func(ctx context.Context) (store.Session, error) {
			return h.w.deps.Store.MarkDevice(ctx, h.fence, e.ID.String(), wa.PhoneOf(&e.ID), e.BusinessName)
		})
	case *waevents.PairError:
		h.end(store.Ending{Reason: store.ReasonPairError, LastError: store.ErrPairingFailed}, e.Error)
	case *waevents.Connected:
		h.connectionUp()
		h.onConnected()
	case *waevents.Disconnected:
		if h.deviceJID == "" {
			return // still pairing: the QR channel reports this as a timeout
		}
		h.connectionDown(store.ReasonConnectionLost, "")
	case *waevents.LoggedOut:
		reason, lastErr, cause := store.ReasonPhoneUnlinked, store.ErrorCode(""), error(nil)
		if e.OnConnect {
			reason, lastErr, cause = store.ReasonLoggedOut, store.ErrLoginRefused, fmt.Errorf("login refused: %s", e.Reason)
		}
		h.deleteKeys()
		h.end(store.Ending{Reason: reason, LastError: lastErr, KeysDeleted: true}, cause)
	case *waevents.StreamReplaced:
		h.end(store.Ending{Reason: store.ReasonStreamReplaced, LastError: store.ErrStreamReplaced}, nil)
	case *waevents.TemporaryBan:
		if h.deviceJID == "" {
			h.end(store.Ending{Reason: store.ReasonTemporaryBan, LastError: store.ErrTemporaryBan}, errors.New(e.String()))
			return
		}
		h.onTemporaryBan(e)
	case *waevents.ClientOutdated:
		if h.deviceJID == "" {
			// Nothing to keep: the user starts a new pairing, which the
			// refreshed version serves.
			h.refreshVersionInBackground()
			h.end(store.Ending{Reason: store.ReasonClientOutdated, LastError: store.ErrClientOutdated}, nil)
			return
		}
		h.onClientOutdated()
	case *waevents.ConnectFailure:
		cause := fmt.Errorf("connect failure %d: %s", int(e.Reason), e.Message)
		if h.deviceJID == "" {
			h.end(store.Ending{Reason: store.ReasonConnectFailure, LastError: store.ErrConnectRefused}, cause)
			return
		}
		h.log.Warn("WhatsApp refused the connection; retrying", "error", cause)
		h.connectionDown(store.ReasonConnectFailure, store.ErrConnectRefused)
	case *waevents.PushNameSetting:
		if name := e.Action.GetName(); name != "" {
			h.write("", func(ctx context.Context) (store.Session, error) {
				return h.w.deps.Store.SetUserName(ctx, h.fence, name)
			})
		}
	case *waevents.KeepAliveTimeout:
		h.log.Warn("keepalive timeout", "error_count", e.ErrorCount)
		if h.deviceJID != "" && time.Since(e.LastSuccess) > whatsmeow.KeepAliveMaxFailTime {
			// What whatsmeow's own auto-reconnect would do: the socket is
			// dead in all but name.
			h.client.Disconnect()
			h.log.Warn("no keepalive answer for too long; reconnecting", "since", time.Since(e.LastSuccess).Round(time.Second))
			h.connectionDown(store.ReasonKeepaliveTimeout, store.ErrServerUnreachable)
		}
	case *waevents.KeepAliveRestored:
		h.log.Info("keepalive restored")
	case retryConnect:
		if e.gen == h.retryGen && !h.up {
			h.reconnect()
		}
	case dialFailed:
		h.log.Warn("could not reach WhatsApp", "error", e.err)
		h.connectionDown(store.ReasonConnectFailed, store.ErrServerUnreachable)
	case versionChecked:
		h.onVersionChecked(e)
	case releaseCheck:
		h.onReleaseCheck(e)
	case banWait:
		h.waitBan(e.until)
	case *waevents.StreamError:
		h.log.Warn("unknown stream error from server", "code", e.Code)
	}
}

func (h *hosted) onQR(item whatsmeow.QRChannelItem) {
	switch item.Event {
	case whatsmeow.QRChannelEventCode:
		if h.pairPhone != "" {
			h.requestPairingCode()
			return
		}
		url, err := qrpng.DataURL(item.Code)
		if err != nil {
			h.end(store.Ending{Reason: store.ReasonQRRenderFailed, LastError: store.ErrQRFailed}, err)
			return
		}
		if _, ok := h.write(events.TypeQR, func(ctx context.Context) (store.Session, error) {
			return h.w.deps.Store.SetQR(ctx, h.fence, url, item.Code)
		}); ok {
			h.log.Info("qr code issued", "valid_for", item.Timeout)
			h.signalFirst(nil)
		}
	case whatsmeow.QRChannelSuccess.Event:
		// PairSuccess and Connected carry the state.
	case whatsmeow.QRChannelTimeout.Event:
		h.end(store.Ending{Reason: store.ReasonQRTimeout, LastError: store.ErrQRTimeout}, nil)
	case whatsmeow.QRChannelClientOutdated.Event:
		h.end(store.Ending{Reason: store.ReasonClientOutdated, LastError: store.ErrClientOutdated}, nil)
	case whatsmeow.QRChannelScannedWithoutMultidevice.Event:
		h.log.Warn("QR scanned by a phone without multi-device support")
	case whatsmeow.QRChannelEventError:
		h.end(store.Ending{Reason: store.ReasonPairError, LastError: store.ErrPairingFailed}, item.Error)
	default:
		h.end(store.Ending{Reason: store.ReasonPairError, LastError: store.ErrPairingFailed},
			fmt.Errorf("unexpected pairing state %q", item.Event))
	}
}

func (h *hosted) requestPairingCode() {
	if h.codeRequested {
		return // later QR refs only keep the socket open; the code stands
	}
	h.codeRequested = true
	ctx, cancel := context.WithTimeout(h.ctx, pairingCodeTimeout)
	dev := h.w.deps.Host.Device()
	code, err := h.client.PairPhone(ctx, h.pairPhone, true, dev.PairClient(), dev.Display())
	cancel()
	if err != nil {
		h.end(store.Ending{Reason: store.ReasonPairingCodeFailed, LastError: store.ErrPairingCodeFailed}, err)
		return
	}
	if _, ok := h.write(events.TypePairingCode, func(ctx context.Context) (store.Session, error) {
		return h.w.deps.Store.SetPairingCode(ctx, h.fence, code)
	}); ok {
		h.log.Info("pairing code issued")
		h.signalFirst(nil)
	}
}

func (h *hosted) onConnected() {
	if h.loginTimer != nil {
		h.loginTimer.Stop()
	}
	reason := store.ReasonReconnected
	if !h.connectedBefore {
		reason = store.ReasonPaired
		if h.restored {
			reason = store.ReasonRestored
		}
	}
	h.connectedBefore = true
	h.connectedAt.Store(time.Now().UnixNano())
	// History a worker took in but never stored (killed while storing it).
	h.w.wg.Add(1)
	go func() { defer h.w.wg.Done(); h.recoverHistory() }()
	dev := h.client.Store
	id := dev.ID // read once: whatsmeow's goroutines may clear it (see deviceJID)
	if id == nil {
		h.log.Error("connected without a device id")
		return
	}
	jid := *id
	h.deviceJID = jid.String()
	if _, ok := h.write(events.TypeStatus, func(ctx context.Context) (store.Session, error) {
		return h.w.deps.Store.MarkConnected(ctx, h.fence, store.Linked{
			DeviceJID: jid.String(), Phone: wa.PhoneOf(&jid), Name: wa.NameOf(dev), Reason: reason,
		}, h.w.cfg.SessionTTL)
	}); ok {
		h.log.Info("session connected", "reason", reason)
		h.signalFirst(nil)
	}
}

// onEnd carries out a session the user (or expiry) wants gone: log the
// device out of WhatsApp so the phone's list of linked devices loses it,
// delete its keys, and end the row.
func (h *hosted) onEnd(reason store.Reason) {
	var lastErr store.ErrorCode
	if h.deviceJID != "" {
		ctx, cancel := context.WithTimeout(context.Background(), logoutTimeout)
		err := h.client.Logout(ctx)
		cancel()
		if err != nil {
			lastErr = store.ErrLogoutUnconfirmed
			h.log.Warn("logout not confirmed; deleting keys locally", "error", err)
		}
		h.deleteKeys()
	}
	h.end(store.Ending{Reason: reason, LastError: lastErr, KeysDeleted: true}, nil)
}

// deleteKeys makes sure the device's keys are gone from Postgres, whether
// or not whatsmeow already deleted them.
func (h *hosted) deleteKeys() {
	if h.deviceJID == "" {
		return
	}
	jid := h.deviceJID
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if err := h.w.deps.Store.DeleteDeviceKeys(ctx, jid); err != nil {
		h.log.Error("delete device keys", "error", err)
	}
}

// recordPairedDevice covers a pairing that completed while its PairSuccess
// was still on its way to the loop: whatsmeow saves the device's keys and
// confirms the pairing to the server before it dispatches the event, so a
// handoff handled first would release the session as unpaired, and the
// user who just scanned would get a new QR. If keys for this client's
// device are stored, the row gets the device first, and the release makes
// the session a restore. The client's Store is not read for the JID:
// whatsmeow writes it from its own goroutine; the noise key it is looked up
// by never changes.
func (h *hosted) recordPairedDevice() {
	ctx, cancel := context.WithTimeout(h.ctx, writeTimeout)
	jid, err := h.w.deps.Store.DeviceByNoiseKey(ctx, h.client.Store.NoiseKey.Priv[:])
	cancel()
	if err != nil {
		h.log.Warn("look up a device paired during release", "error", err)
		return
	}
	if jid == "" {
		return
	}
	id, err := types.ParseJID(jid)
	if err != nil {
		h.log.Warn("stored device with an invalid jid", "error", err)
		return
	}
	h.log.Info("pairing completed during release: kept for a restore")
	h.deviceJID = jid
	h.write("", func(ctx context.Context) (store.Session, error) {
		return h.w.deps.Store.MarkDevice(ctx, h.fence, jid, wa.PhoneOf(&id), "")
	})
}

// connectRetryDelay is how long the takeover of a session released because
// its client could not connect waits before another attempt.
const connectRetryDelay = 5 * time.Second

// release hands the session to another worker: disconnect without logout,
// give the lease up, and enqueue the task that picks it up again.
func (h *hosted) release(reason store.Reason, lastErr store.ErrorCode) {
	h.releaseTo(reason, lastErr, tasks.QueueShared)
}

// releaseTo is release with the takeover enqueued on queue: wa:shared for
// any worker, or one worker's own queue to hand the session to it.
func (h *hosted) releaseTo(reason store.Reason, lastErr store.ErrorCode, queue string) {
	// An expected disconnect: whatsmeow emits no event for it, and the
	// lease is still ours until Release commits, so no other worker can
	// have connected yet. A send in flight finishes first.
	h.leaving.Store(true)
	h.closeOutbox()
	h.client.Disconnect()
	if h.deviceJID == "" {
		h.recordPairedDevice()
	}
	s, ok := h.write(events.TypeStatus, func(ctx context.Context) (store.Session, error) {
		return h.w.deps.Store.Release(ctx, h.fence, reason, lastErr)
	})
	if h.w.hooks.afterLeaveWrite != nil {
		h.w.hooks.afterLeaveWrite(h.id)
	}
	h.stop()
	if !ok {
		return
	}
	var (
		j   tasks.Job
		err error
	)
	// The takeover's id names the epoch released here (tasks.TakeoverID),
	// so it never collides with the task that may still be running this
	// hosting's handler.
	if s.DeviceJID != nil {
		j, err = tasks.NewRestoreOn(s.SessionID, s.LeaseEpoch, string(reason), queue)
	} else {
		j, err = tasks.NewCreate(s.SessionID, s.LeaseEpoch, string(reason))
	}
	if err == nil && reason == store.ReasonConnectFailed {
		// This client could not connect; the next attempt, maybe here
		// again, waits a little instead of spinning.
		j.Opts = append(j.Opts, asynq.ProcessIn(connectRetryDelay))
	}
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		res, qerr := h.w.deps.Enqueuer.Enqueue(ctx, j, false)
		cancel()
		err = qerr
		if h.w.hooks.takeoverEnqueued != nil {
			h.w.hooks.takeoverEnqueued(h.id, res, err)
		}
	}
	if err != nil {
		// The reconciler finds the free lease within RESTORE_INTERVAL.
		h.log.Warn("enqueue takeover after release", "error", err)
	}
	h.log.Info("session released", "reason", reason, "takeover_queue", queue)
}
