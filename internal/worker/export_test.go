package worker

import (
	"context"

	"go.mau.fi/whatsmeow"

	"wasessions/internal/queue"
)

// SetBeforeRenew makes the heartbeat call f after it took its snapshot of
// hosted sessions and before it sends the renewal (see hooks).
func SetBeforeRenew(w *Worker, f func()) { w.hooks.beforeRenew = f }

// SetBeforeEvent makes each hosted session's whatsmeow event handler call
// f with the event before passing it to the session's loop (see hooks).
func SetBeforeEvent(w *Worker, f func(evt any)) { w.hooks.beforeEvent = f }

// SetBeforeWAEvent makes each hosted session's message handler call f
// with the event before it handles it (see hooks).
func SetBeforeWAEvent(w *Worker, f func(evt any)) { w.hooks.beforeWAEvent = f }

// SetHostReturns makes a create or restore handler call f just before it
// returns, once its hosting is up or ended (see hooks).
func SetHostReturns(w *Worker, f func(sessionID string)) { w.hooks.hostReturns = f }

// SetTakeoverEnqueued makes a release call f with the answer to the
// enqueue of its takeover task (see hooks).
func SetTakeoverEnqueued(w *Worker, f func(sessionID string, res queue.Result, err error)) {
	w.hooks.takeoverEnqueued = f
}

// Abandon stops the hosted session's client as a lost lease does.
func Abandon(w *Worker, sessionID, cause string) {
	if h := w.lookup(sessionID); h != nil {
		h.abandon(cause)
	}
}

// Client is the whatsmeow client hosting sessionID here, or nil.
func Client(w *Worker, sessionID string) *whatsmeow.Client {
	if h := w.lookup(sessionID); h != nil {
		return h.client
	}
	return nil
}

// SetAfterLeaveWrite makes a release or an end call f after the write
// that gives the lease up, before the client stops (see hooks).
func SetAfterLeaveWrite(w *Worker, f func(sessionID string)) { w.hooks.afterLeaveWrite = f }

// SetLeaseLostChecked makes leaseLost call f once it has dealt with a
// session a heartbeat found lost (see hooks).
func SetLeaseLostChecked(w *Worker, f func(sessionID string)) { w.hooks.leaseLostChecked = f }

// RenewNow runs one heartbeat now.
func RenewNow(ctx context.Context, w *Worker) { w.renew(ctx) }

// SetSendAcked makes a session's sender call f when WhatsApp has acked a
// message, before it records the message as sent (see hooks).
func SetSendAcked(w *Worker, f func(sessionID, messageID string)) { w.hooks.sendAcked = f }

// SetSentRecorded sets the hook run after a message's sent status is
// written, before its event is published.
func SetSentRecorded(w *Worker, f func(sessionID, messageID string)) { w.hooks.sentRecorded = f }
