package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"
	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	waevents "go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"

	"wasessions/internal/events"
	"wasessions/internal/store"
	"wasessions/internal/wa"
	"wasessions/tasks"
)

// Messages through a hosted session (docs/DESIGN-NOTES.md "Messages").
//
// Sending: the session's outbox is its queued rows in Postgres. One sender
// goroutine per hosted session takes them one at a time, in acceptance
// order, through store.NextOutbound, which checks this worker's fence and
// takes a pacing token in the same transaction. A message stays the head
// of the outbox until WhatsApp acked it or it failed for good, so order
// holds across retries, and its WhatsApp id was fixed when the API
// accepted it, so a resend after a crash or a handoff is the same message
// to the recipient.
//
// Receiving: whatsmeow acks a message only after the handlers returned
// true (SynchronousAck, see internal/wa); onMessage returns true only once
// the row is committed.

// Send timing.
const (
	// sendTimeout bounds one SendMessage (whatsmeow waits up to 75 s for
	// the server's ack by default; a send that long is retried instead).
	sendTimeout = 30 * time.Second
	// loginPoll is how often a sender with work checks whether its client
	// is logged in again (reconnecting, restored).
	loginPoll = 250 * time.Millisecond
	// maxSendBackoff caps the wait between attempts at one message.
	maxSendBackoff = 30 * time.Second
	// quiesceWait bounds how long a handoff waits for a send in flight to
	// be acked before it disconnects the client.
	quiesceWait = 10 * time.Second
	// resendSettle is how long after logging in the sender holds back a
	// message that an earlier attempt (maybe on a worker that crashed) may
	// already have delivered: WhatsApp hands a returning device the
	// receipts it missed right after login, and a receipt that arrives in
	// this time marks the message delivered, so it is not sent again.
	resendSettle = 3 * time.Second
)

// wakeOutbox tells the sender there may be work; it never blocks.
func (h *hosted) wakeOutbox() {
	select {
	case h.outboxWake <- struct{}{}:
	default:
	}
}

// closeOutbox stops the sender taking new messages and waits (bounded) for
// a send in flight to finish, so a graceful handoff never cuts a message
// between the send and its ack (the next host would send it again: the
// same id, so the recipient shows it once, but WhatsApp sees it twice).
func (h *hosted) closeOutbox() {
	h.outboxClosed.Store(true)
	select {
	case h.sending <- struct{}{}:
		<-h.sending
	case <-time.After(quiesceWait):
		h.log.Warn("handing over with a send still waiting for its ack")
	}
}

// runOutbox is the session's sender. It drains once at start (messages
// queued while no worker hosted the session), then whenever woken.
func (h *hosted) runOutbox() {
	defer h.w.wg.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-h.outboxWake:
		case <-timer.C:
		}
		if retry := h.drainOutbox(); retry > 0 {
			timer.Reset(retry)
		}
	}
}

// drainOutbox sends until the outbox is empty, and returns when to look
// again if it stopped early (not logged in, paced, a failed attempt).
func (h *hosted) drainOutbox() time.Duration {
	cfg := h.w.cfg
	for h.ctx.Err() == nil && !h.outboxClosed.Load() {
		if !h.client.IsLoggedIn() {
			return loginPoll // reconnecting or restoring: the message waits
		}
		if cfg.Pacing.PerMinute > 0 && !sleepCtx(h.ctx, h.jitter()) {
			return 0
		}
		ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
		h.statusMu.Lock()
		m, wait, expired, err := h.w.deps.Store.NextOutbound(ctx, h.fence, cfg.Pacing, cfg.MessageTTL)
		for _, e := range expired {
			h.publishMessage(events.TypeMessageStatus, e)
		}
		h.statusMu.Unlock()
		cancel()
		for _, e := range expired {
			h.log.Info("message expired before it could be sent", "message_id", e.ID)
		}
		switch {
		case errors.Is(err, store.ErrOutboxEmpty), errors.Is(err, store.ErrFenced):
			return 0 // nothing to do, or no longer ours to do
		case err != nil:
			h.log.Warn("read outbox", "error", err)
			return time.Second
		case wait > 0:
			// Paced. Wake no later than the head's expiry, to fail it in time.
			if left := time.Until(m.CreatedAt.Add(cfg.MessageTTL)); left < wait {
				return max(left, 0) + 10*time.Millisecond
			}
			return wait + h.jitter()
		}
		if m.Attempts > 1 && m.SentAt == nil {
			if since := time.Since(time.Unix(0, h.connectedAt.Load())); since < resendSettle {
				return resendSettle - since
			}
		}
		if retry := h.sendOne(m); retry > 0 {
			return retry
		}
	}
	return 0
}

// jitter is a small random delay (up to a tenth of the paced interval,
// at most 500 ms) so paced sends do not tick like a machine.
func (h *hosted) jitter() time.Duration {
	if h.w.cfg.Pacing.PerMinute <= 0 {
		return 0
	}
	interval := time.Duration(float64(time.Minute) / h.w.cfg.Pacing.PerMinute)
	return rand.N(min(interval/10, 500*time.Millisecond) + 1)
}

// sendOne makes one attempt at m and returns 0 when m is done (sent or
// failed for good), else how long to wait before the next attempt.
func (h *hosted) sendOne(m store.Message) time.Duration {
	select {
	case h.sending <- struct{}{}:
		defer func() { <-h.sending }()
	case <-h.ctx.Done():
		return 0
	}
	if h.outboxClosed.Load() {
		return 0
	}
	log := h.log.With("message_id", m.ID, "wa_message_id", m.WAMessageID, "attempt", m.Attempts)
	backoff := min(time.Duration(m.Attempts)*time.Second, maxSendBackoff)

	to, onWA, err := h.recipient(m.Chat)
	if err != nil {
		log.Warn("look up recipient on WhatsApp", "error", err)
		return backoff
	}
	if !onWA {
		h.failMessage(m, store.ReasonNotOnWhatsApp)
		log.Info("message failed: recipient not on WhatsApp")
		return 0
	}
	ctx, cancel := context.WithTimeout(h.ctx, sendTimeout)
	start := time.Now()
	_, err = h.client.SendMessage(ctx, to, &waE2E.Message{Conversation: proto.String(m.Text)},
		whatsmeow.SendRequestExtra{ID: types.MessageID(m.WAMessageID)})
	cancel()
	switch {
	case err == nil:
		if h.w.hooks.sendAcked != nil {
			h.w.hooks.sendAcked(h.id, m.ID)
		}
		h.markSent(m, log)
		log.Info("message sent", "ack_ms", time.Since(start).Milliseconds())
		return 0
	case errors.Is(err, whatsmeow.ErrServerReturnedError):
		h.failMessage(m, store.ReasonRejected)
		log.Warn("message rejected by WhatsApp", "error", err)
		return 0
	default:
		// Not connected, timed out waiting for the ack, socket dropped: the
		// same message (same id) goes again.
		log.Warn("send failed; will retry", "error", err, "retry_in", backoff)
		return backoff
	}
}

// recipient resolves an E.164 number to the JID to send to, asking
// WhatsApp once per chat and remembering the answer while hosted here.
func (h *hosted) recipient(chat string) (types.JID, bool, error) {
	if jid, ok := h.recipients[chat]; ok {
		return jid, !jid.IsEmpty(), nil
	}
	ctx, cancel := context.WithTimeout(h.ctx, 15*time.Second)
	defer cancel()
	res, err := h.client.IsOnWhatsApp(ctx, []string{chat})
	if err != nil {
		return types.JID{}, false, err
	}
	if len(res) == 0 {
		return types.JID{}, false, errors.New("WhatsApp answered the contact query with no entry")
	}
	var jid types.JID
	if res[0].IsIn {
		jid = res[0].JID
	}
	h.recipients[chat] = jid
	return jid, res[0].IsIn, nil
}

// markSent records the server's ack. It retries until the write applies,
// the message is gone, or the hosting ends, as state writes do (write):
// the message stays at the head of the outbox until this is recorded, so
// a record given up on while Postgres is away would have the sender send
// it again the moment Postgres answers, and the recipient get it twice.
// If the hosting ends first, the next host holds the message back and
// learns from the phone's receipts that it went out (drainOutbox).
func (h *hosted) markSent(m store.Message, log interface{ Warn(string, ...any) }) {
	backoff := writeBackoff
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(h.ctx, writeTimeout)
		h.statusMu.Lock()
		got, changed, err := h.w.deps.Store.MarkSent(ctx, m.ID)
		if err == nil && changed {
			if h.w.hooks.sentRecorded != nil {
				h.w.hooks.sentRecorded(h.id, m.ID)
			}
			h.publishMessage(events.TypeMessageStatus, got)
		}
		h.statusMu.Unlock()
		cancel()
		if err == nil {
			return
		}
		if errors.Is(err, store.ErrMessageNotFound) {
			return // failed meanwhile (the session ended) or deleted
		}
		if attempt == 1 || attempt%10 == 0 {
			log.Warn("record message sent; retrying", "error", err, "record_attempts", attempt)
		}
		select {
		case <-h.ctx.Done():
			log.Warn("record message sent given up: hosting ended; the next host holds it back", "record_attempts", attempt)
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, writeMaxBackoff)
	}
}

func (h *hosted) failMessage(m store.Message, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h.statusMu.Lock()
	defer h.statusMu.Unlock()
	got, err := h.w.deps.Store.FailOutbound(ctx, m.ID, reason)
	if err != nil {
		h.log.Warn("record message failed", "message_id", m.ID, "reason", reason, "error", err)
		return
	}
	h.publishMessage(events.TypeMessageStatus, got)
}

func (h *hosted) publishMessage(typ string, m store.Message) {
	h.w.events.publish(events.FromMessage(typ, m))
}

// onWAEvent handles the whatsmeow events about messages, on whatsmeow's
// own goroutine; returning false withholds the ack (SynchronousAck), so
// WhatsApp delivers the message again.
func (h *hosted) onWAEvent(evt any) (ok bool) {
	// whatsmeow recovers a handler's panic and then counts the handler as
	// successful, so it would receipt a message that was never stored:
	// a panic here is a failure, and WhatsApp delivers the event again.
	defer func() {
		if r := recover(); r != nil {
			h.log.Error("message handler panicked; receipt withheld", "event", fmt.Sprintf("%T", evt), "panic", fmt.Sprint(r))
			ok = false
		}
	}()
	if h.w.hooks.beforeWAEvent != nil {
		h.w.hooks.beforeWAEvent(evt)
	}
	switch e := evt.(type) {
	case *waevents.Message:
		if n := wa.HistoryNotification(e.Message); n != nil && e.Info.IsFromMe {
			return h.onHistoryNotification(n)
		}
		return h.onMessage(e)
	case *waevents.Receipt:
		return h.onReceipt(e)
	}
	return true
}

// textOf is a message's text, "" for anything that is not a text.
func textOf(m *waE2E.Message) string {
	if t := m.GetConversation(); t != "" {
		return t
	}
	return m.GetExtendedTextMessage().GetText()
}

// chatOf names the other party of a one-to-one chat: E.164 when WhatsApp
// gives a phone number (directly, or beside a LID), else the JID.
func chatOf(chat, alt types.JID) string {
	switch {
	case chat.Server == types.DefaultUserServer:
		return "+" + chat.User
	case alt.Server == types.DefaultUserServer:
		return "+" + alt.User
	}
	return chat.ToNonAD().String()
}

func (h *hosted) onMessage(e *waevents.Message) bool {
	info := e.Info
	if info.IsFromMe || info.IsGroup || info.Chat.Server == types.BroadcastServer || info.Chat.Server == types.NewsletterServer {
		return true // not a text to this account from a contact: acked, not stored
	}
	text := textOf(e.Message)
	if text == "" {
		return true
	}
	return h.saveInbound(info, text)
}

func (h *hosted) saveInbound(info types.MessageInfo, text string) bool {
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	m, created, err := h.w.deps.Store.SaveInbound(ctx, store.Inbound{
		SessionID: h.id, UserID: h.userID, Chat: chatOf(info.Chat, info.SenderAlt), Text: text,
		WAMessageID: string(info.ID), Timestamp: info.Timestamp,
	})
	if err != nil {
		h.log.Warn("store received message; not acked, WhatsApp delivers it again", "wa_message_id", info.ID, "error", err)
		return false
	}
	if created {
		h.log.Info("message received", "message_id", m.ID, "wa_message_id", info.ID)
		h.publishMessage(events.TypeMessageReceived, m)
	}
	return true
}

func (h *hosted) onReceipt(e *waevents.Receipt) bool {
	if len(e.MessageIDs) == 0 {
		return true
	}
	var read, accepted bool
	switch {
	case e.Type == types.ReceiptTypeSender && e.IsFromMe:
		// The account's own phone got its copy of a message this device
		// sent: WhatsApp holds it. After a crash between a send and its
		// ack this is how the new host learns the message went out while
		// the recipient's phone is offline (docs/DESIGN-NOTES.md).
		accepted = true
	case e.IsFromMe:
		return true // our own devices' reads, peer messages...
	case e.Type == types.ReceiptTypeDelivered:
	case e.Type == types.ReceiptTypeRead:
		read = true
	default:
		return true // played, retry...
	}
	ids := make([]string, len(e.MessageIDs))
	for i, id := range e.MessageIDs {
		ids[i] = string(id)
	}
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	var moved []store.Message
	var err error
	h.statusMu.Lock()
	defer h.statusMu.Unlock()
	if accepted {
		moved, err = h.w.deps.Store.MarkAccepted(ctx, h.id, ids)
	} else {
		moved, err = h.w.deps.Store.ApplyReceipt(ctx, h.id, ids, read)
	}
	if err != nil {
		h.log.Warn("record receipt", "error", err)
		return false
	}
	for _, m := range moved {
		h.publishMessage(events.TypeMessageStatus, m)
	}
	return true
}

// onHistoryNotification stores the texts of the history the account's
// phone shares (HISTORY_SYNC=recent; with none it is acked and never
// downloaded). It runs before the notification's receipt and returns false
// when anything was not stored; whatever is left is in whatsmeow's
// decrypted-event buffer, which recoverHistory reads (internal/wa
// history.go says why the receipt alone does not suffice).
func (h *hosted) onHistoryNotification(n *waE2E.HistorySyncNotification) bool {
	if !h.w.deps.Host.HistoryRecent() {
		return true
	}
	if err := h.storeHistory(n); err != nil {
		h.log.Warn("store history sync; left for the next attempt", "error", err)
		h.retryHistoryLater()
		return false
	}
	return true
}

// storeHistory downloads (an inline payload: decodes) one notification's
// history and stores the texts contacts sent in one-to-one chats, each once.
func (h *hosted) storeHistory(n *waE2E.HistorySyncNotification) error {
	ctx, cancel := context.WithTimeout(h.ctx, 2*time.Minute)
	defer cancel()
	data, err := h.client.DownloadHistorySync(ctx, n, true)
	if err != nil {
		return fmt.Errorf("download history: %w", err)
	}
	stored := 0
	for _, conv := range data.GetConversations() {
		chat, err := types.ParseJID(conv.GetID())
		if err != nil || chat.Server != types.DefaultUserServer && chat.Server != types.HiddenUserServer {
			continue
		}
		for _, hm := range conv.GetMessages() {
			evt, err := h.client.ParseWebMessage(chat, hm.GetMessage())
			if err != nil || evt.Info.IsFromMe {
				continue
			}
			text := textOf(evt.Message)
			if text == "" {
				continue
			}
			if !h.saveInbound(evt.Info, text) {
				return fmt.Errorf("store history message %s: not stored", evt.Info.ID)
			}
			stored++
		}
	}
	h.log.Info("history sync stored", "sync_type", data.GetSyncType().String(), "messages", stored)
	return nil
}

// historyRetryAfter is how long after a failed attempt the buffered history is
// tried again while the session stays connected.
const historyRetryAfter = 5 * time.Second

// retryHistoryLater runs recoverHistory once after historyRetryAfter, unless
// one is already waiting.
func (h *hosted) retryHistoryLater() {
	if !h.historyRetry.CompareAndSwap(false, true) {
		return
	}
	h.w.wg.Add(1)
	go func() {
		defer h.w.wg.Done()
		ok := sleepCtx(h.ctx, historyRetryAfter)
		h.historyRetry.Store(false)
		if ok {
			h.recoverHistory()
		}
	}()
}

// recoverHistory stores the history notifications whatsmeow decrypted for
// this device but whose handling never finished (a worker killed in the
// handler, a failed commit), and clears them from the buffer. It runs
// after every login and after a failed attempt; storing is idempotent, so
// running beside the live handler of the same notification is harmless.
func (h *hosted) recoverHistory() {
	if !h.w.deps.Host.HistoryRecent() {
		return
	}
	dev := h.client.Store.ID
	if dev == nil {
		return
	}
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	pending, err := h.w.deps.Host.PendingHistory(ctx, *dev)
	cancel()
	if err != nil {
		h.log.Warn("read unfinished history sync", "error", err)
		h.retryHistoryLater()
		return
	}
	for _, p := range pending {
		if err := h.storeHistory(p.Notification); err != nil {
			h.log.Warn("store unfinished history sync; left for the next attempt", "error", err)
			h.retryHistoryLater()
			return
		}
		ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
		err := h.client.Store.EventBuffer.ClearBufferedEventPlaintext(ctx, p.Hash)
		cancel()
		if err != nil {
			h.log.Warn("clear stored history sync from the buffer", "error", err)
		}
		h.log.Info("unfinished history sync recovered")
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// handleSend wakes the sender of a session hosted here. A session hosted
// by another worker (it moved after the API looked) gets the wake-up
// forwarded to that worker's queue; one hosted nowhere is drained by its
// next host when that claims it.
func (w *Worker) handleSend(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.ParseSend(t)
	if err != nil {
		return err
	}
	if h := w.lookup(p.SessionID); h != nil {
		h.wakeOutbox()
		return nil
	}
	sess, err := w.deps.Store.Get(ctx, p.SessionID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errSkipped
	case err != nil:
		return err
	}
	owner := store.Str(sess.WorkerID)
	if !sess.LeaseLive || owner == "" || owner == w.cfg.WorkerID {
		return errSkipped
	}
	q, err := tasks.WorkerQueue(owner)
	if err != nil {
		return err
	}
	j, err := tasks.NewSend(p.SessionID, p.MessageID, q)
	if err != nil {
		return err
	}
	_, err = w.deps.Enqueuer.Enqueue(ctx, j, false)
	return err
}
