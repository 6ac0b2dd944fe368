// Package tasks is the contract between api, worker and scheduler: the asynq
// task type names, their payloads, the queues they travel on, and
// constructors that set every option explicitly (asynq's defaults, 25
// retries and a 30-minute timeout, suit none of these tasks).
//
// Every task carries a deterministic id, so enqueueing the same intent twice
// is harmless: asynq refuses the duplicate with ErrTaskIDConflict, which the
// enqueuer (internal/queue) treats as success. Handlers must still be
// idempotent, because asynq delivers at least once.
package tasks

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
)

// Task type names.
const (
	// TypeSessionCreate starts pairing for a new session: a worker claims the
	// lease, creates a whatsmeow device and publishes its QR codes.
	TypeSessionCreate = "session:create"
	// TypeSessionRestore reconnects a linked session from its stored device
	// keys on whichever worker takes it: no QR.
	TypeSessionRestore = "session:restore"
	// TypeSessionDisconnect carries out a session whose desired state is
	// "gone": log the device out, delete its keys, end the row.
	TypeSessionDisconnect = "session:disconnect"
	// TypeSessionHandoff moves a connected session from the worker whose
	// queue it is on to another worker (rebalancing): disconnect, release,
	// restore on the target.
	TypeSessionHandoff = "session:handoff"
	// TypeSessionsReconcile compares desired and actual state of every
	// session and enqueues what closes the gap.
	TypeSessionsReconcile = "sessions:reconcile"
	// TypeSessionsCleanup deletes expired sessions and their device keys.
	TypeSessionsCleanup = "sessions:cleanup"
	// TypeMessagesSend wakes the sender of a session's outbox on the worker
	// that hosts it. It carries no message: the sender takes whatever is
	// queued, in order, from Postgres (see internal/worker/outbox.go).
	TypeMessagesSend = "messages:send"
	// TypeWebhookDeliver makes one attempt to deliver one outbox event to
	// one webhook endpoint (internal/webhook). The attempt is claimed in
	// Postgres, so a duplicate or stale task does nothing.
	TypeWebhookDeliver = "webhook:deliver"
)

// Queue names.
const (
	// QueueShared is served by every worker: work that any worker may take.
	QueueShared = "wa:shared"
	// QueueWebhooks carries webhook deliveries, served by every worker with
	// a concurrency of its own (WEBHOOK_CONCURRENCY), so slow receivers
	// never hold up session tasks.
	QueueWebhooks = "wa:webhooks"
	// workerQueuePrefix + WORKER_ID is the queue only that worker serves,
	// for commands that must reach the process holding a session's client.
	workerQueuePrefix = "wa:w:"
)

// WorkerQueue is the queue served only by the worker with this stable id.
// An empty id is an error: its queue, "wa:w:", is one no worker serves, so
// a task put there would wait forever.
func WorkerQueue(workerID string) (string, error) {
	if workerID == "" {
		return "", errors.New("tasks: worker queue for an empty worker id")
	}
	return workerQueuePrefix + workerID, nil
}

// WorkerIDFromQueue is the inverse of WorkerQueue; ok is false for other queues.
func WorkerIDFromQueue(queue string) (workerID string, ok bool) {
	if len(queue) > len(workerQueuePrefix) && queue[:len(workerQueuePrefix)] == workerQueuePrefix {
		return queue[len(workerQueuePrefix):], true
	}
	return "", false
}

// SessionPayload identifies the session a per-session task acts on. The
// task holds no state of its own: the handler reads the row, so a late or
// repeated delivery acts on what is true now.
type SessionPayload struct {
	SessionID string `json:"session_id"`
	// Reason says why the task was enqueued (e.g. "created",
	// "worker_shutdown", "lease_expired"); handlers log it. A disconnect's
	// reason also decides how the session ends: "session_expired" ends it
	// as expired, anything else as disconnected by the user (see
	// store.GoneReason). It never decides whether a task acts: that is
	// read from the row.
	Reason string `json:"reason,omitempty"`
}

// SlotPayload names the time slot of a periodic task, which is also what
// makes its id unique per slot across scheduler replicas.
type SlotPayload struct {
	Slot time.Time `json:"slot"`
}

// Timeouts and retry budgets, chosen per task.
const (
	createTimeout     = 2 * time.Minute
	restoreTimeout    = 2 * time.Minute
	disconnectTimeout = 1 * time.Minute
	reconcileTimeout  = 1 * time.Minute
	cleanupTimeout    = 10 * time.Minute
	handoffTimeout    = 1 * time.Minute
	sendTimeout       = 30 * time.Second

	createMaxRetry     = 3
	restoreMaxRetry    = 3
	disconnectMaxRetry = 8
	reconcileMaxRetry  = 1
	cleanupMaxRetry    = 3
	handoffMaxRetry    = 1
	sendMaxRetry       = 3
)

// Job is a task plus the options it is enqueued with. ID and Queue stay
// readable (asynq keeps a task's options private) because resolving an id
// conflict needs both.
type Job struct {
	Task  *asynq.Task
	ID    string
	Queue string
	// Opts are the enqueue options, TaskID and Queue included.
	Opts []asynq.Option
}

func newJob(typ string, payload any, id, queue string, maxRetry int, timeout, retention time.Duration) (Job, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return Job{}, fmt.Errorf("tasks: %s: %w", typ, err)
	}
	opts := []asynq.Option{asynq.TaskID(id), asynq.Queue(queue), asynq.MaxRetry(maxRetry), asynq.Timeout(timeout)}
	if retention > 0 {
		opts = append(opts, asynq.Retention(retention))
	}
	return Job{Task: asynq.NewTask(typ, b), ID: id, Queue: queue, Opts: opts}, nil
}

// Takeover tasks (create and restore) start a hosting of a session. Their
// id names the lease epoch they take over from, the session's lease_epoch
// when the task was decided on (0 for a session never hosted), so that:
//   - a worker releasing a session at epoch N and the reconciler that sees
//     the same unhosted row at epoch N enqueue one task, not two;
//   - that task never collides with the one whose handler claimed epoch N
//     (its id names N-1), which may still be running when the release
//     enqueues the next, or be left active forever by a worker that was
//     SIGKILLed: asynq would answer "already queued" and the session would
//     wait for the next reconcile pass, or for asynq's recoverer.

// NewCreate is the task that starts pairing for sessionID on any worker,
// after lease epoch epoch.
func NewCreate(sessionID string, epoch int64, reason string) (Job, error) {
	return newSessionTask(TypeSessionCreate, "create:", sessionID, epoch, reason, QueueShared, createMaxRetry, createTimeout)
}

// NewRestore is the task that reconnects a linked session on any worker,
// after lease epoch epoch.
func NewRestore(sessionID string, epoch int64, reason string) (Job, error) {
	return NewRestoreOn(sessionID, epoch, reason, QueueShared)
}

// NewRestoreOn is NewRestore for a given queue: a worker's own queue when a
// session is handed to that worker on purpose (rebalancing).
func NewRestoreOn(sessionID string, epoch int64, reason, queue string) (Job, error) {
	return newSessionTask(TypeSessionRestore, "restore:", sessionID, epoch, reason, queue, restoreMaxRetry, restoreTimeout)
}

// TakeoverID is the id of the create or restore task (prefix "create:" or
// "restore:") that takes sessionID over after lease epoch epoch.
func TakeoverID(prefix, sessionID string, epoch int64) string {
	return prefix + sessionID + ":" + strconv.FormatInt(epoch, 10)
}

// HandoffPayload names the session to move and the worker to move it to.
type HandoffPayload struct {
	SessionID string `json:"session_id"`
	To        string `json:"to"`
}

// NewHandoff is the task, on the queue of the worker that hosts sessionID,
// that makes it hand the session to worker to.
func NewHandoff(sessionID, from, to string) (Job, error) {
	if sessionID == "" || from == "" || to == "" || from == to {
		return Job{}, fmt.Errorf("tasks: %s: need a session and two different workers", TypeSessionHandoff)
	}
	q, err := WorkerQueue(from)
	if err != nil {
		return Job{}, err
	}
	return newJob(TypeSessionHandoff, HandoffPayload{SessionID: sessionID, To: to}, "handoff:"+sessionID,
		q, handoffMaxRetry, handoffTimeout, 0)
}

// ParseHandoff decodes a handoff payload.
func ParseHandoff(t *asynq.Task) (HandoffPayload, error) {
	var p HandoffPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return p, fmt.Errorf("tasks: %s payload: %w: %w", t.Type(), err, asynq.SkipRetry)
	}
	if p.SessionID == "" || p.To == "" {
		return p, fmt.Errorf("tasks: %s payload without session_id or to: %w", t.Type(), asynq.SkipRetry)
	}
	return p, nil
}

// NewDisconnect is the task that ends a session. queue is the owner's
// worker queue while its lease is live (only that process holds the
// client), QueueShared otherwise.
func NewDisconnect(sessionID, reason, queue string) (Job, error) {
	return newSessionTask(TypeSessionDisconnect, "disconnect:", sessionID, -1, reason, queue, disconnectMaxRetry, disconnectTimeout)
}

// newSessionTask builds a per-session task; epoch >= 0 makes it a takeover
// task (see TakeoverID), -1 keys it by session alone.
func newSessionTask(typ, idPrefix, sessionID string, epoch int64, reason, queue string, maxRetry int, timeout time.Duration) (Job, error) {
	if sessionID == "" {
		return Job{}, fmt.Errorf("tasks: %s: empty session id", typ)
	}
	id := idPrefix + sessionID
	if epoch >= 0 {
		id = TakeoverID(idPrefix, sessionID, epoch)
	}
	return newJob(typ, SessionPayload{SessionID: sessionID, Reason: reason}, id, queue, maxRetry, timeout, 0)
}

// SendPayload names the session whose outbox sender to wake and the
// message that prompted it (the task's id; the sender takes whatever is
// queued, in order, not this message in particular).
type SendPayload struct {
	SessionID string `json:"session_id"`
	MessageID string `json:"message_id"`
}

// NewSend is the task that wakes the outbox sender of sessionID on queue
// (its host's worker queue). Its id names the message that prompted it, so
// a retried enqueue for one message is one task, while each new message
// gets a wake-up of its own even if an earlier one is running right now.
func NewSend(sessionID, messageID, queue string) (Job, error) {
	if sessionID == "" || messageID == "" {
		return Job{}, fmt.Errorf("tasks: %s: need a session and a message", TypeMessagesSend)
	}
	return newJob(TypeMessagesSend, SendPayload{SessionID: sessionID, MessageID: messageID},
		"send:"+messageID, queue, sendMaxRetry, sendTimeout, 0)
}

// WebhookTimeout bounds one webhook:deliver task; the deliverer makes
// further attempts in the same task only while a whole one still fits.
const WebhookTimeout = 60 * time.Second

// WebhookPayload names the delivery (event to endpoint) and how many
// attempts it had when the task was made.
type WebhookPayload struct {
	EndpointID string `json:"endpoint_id"`
	EventID    string `json:"event_id"`
	Attempts   int    `json:"attempts"`
}

// NewWebhookDeliver is the task that makes attempt attempts+1 of the
// delivery of eventID to endpointID. Its id names the attempt, so every
// dispatcher that finds the delivery due enqueues one task for it, and the
// next attempt gets a new task. asynq does not retry it: the retry
// schedule lives in Postgres (WEBHOOK_RETRY_SCHEDULE).
func NewWebhookDeliver(endpointID, eventID string, attempts int) (Job, error) {
	if endpointID == "" || eventID == "" || attempts < 0 {
		return Job{}, fmt.Errorf("tasks: %s: need an endpoint, an event and an attempt count", TypeWebhookDeliver)
	}
	return newJob(TypeWebhookDeliver, WebhookPayload{EndpointID: endpointID, EventID: eventID, Attempts: attempts},
		"webhook:"+endpointID+":"+eventID+":"+strconv.Itoa(attempts), QueueWebhooks, 0, WebhookTimeout, 0)
}

// ParseWebhookDeliver decodes a webhook delivery payload.
func ParseWebhookDeliver(t *asynq.Task) (WebhookPayload, error) {
	var p WebhookPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return p, fmt.Errorf("tasks: %s payload: %w: %w", t.Type(), err, asynq.SkipRetry)
	}
	if p.EndpointID == "" || p.EventID == "" {
		return p, fmt.Errorf("tasks: %s payload without endpoint_id or event_id: %w", t.Type(), asynq.SkipRetry)
	}
	return p, nil
}

// ParseSend decodes a send payload.
func ParseSend(t *asynq.Task) (SendPayload, error) {
	var p SendPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return p, fmt.Errorf("tasks: %s payload: %w: %w", t.Type(), err, asynq.SkipRetry)
	}
	if p.SessionID == "" || p.MessageID == "" {
		return p, fmt.Errorf("tasks: %s payload without session_id or message_id: %w", t.Type(), asynq.SkipRetry)
	}
	return p, nil
}

// NewReconcile is the reconcile task for the slot starting at slot, which
// lasts interval. Its id is unique to the slot and kept for two slots after
// it completes, so scheduler replicas that fire for the same slot enqueue
// it once.
func NewReconcile(slot time.Time, interval time.Duration) (Job, error) {
	return newSlotTask(TypeSessionsReconcile, "reconcile:", slot, reconcileMaxRetry, reconcileTimeout, 2*interval)
}

// NewCleanup is the cleanup task for one firing of CLEANUP_CRON; see
// NewReconcile for why the id names the slot.
func NewCleanup(slot time.Time, retention time.Duration) (Job, error) {
	return newSlotTask(TypeSessionsCleanup, "cleanup:", slot, cleanupMaxRetry, cleanupTimeout, retention)
}

func newSlotTask(typ, idPrefix string, slot time.Time, maxRetry int, timeout, retention time.Duration) (Job, error) {
	slot = slot.UTC()
	return newJob(typ, SlotPayload{Slot: slot}, idPrefix+strconv.FormatInt(slot.Unix(), 10), QueueShared, maxRetry, timeout, retention)
}

// ParseSession decodes a per-session payload.
func ParseSession(t *asynq.Task) (SessionPayload, error) {
	var p SessionPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return p, fmt.Errorf("tasks: %s payload: %w: %w", t.Type(), err, asynq.SkipRetry)
	}
	if p.SessionID == "" {
		return p, fmt.Errorf("tasks: %s payload without session_id: %w", t.Type(), asynq.SkipRetry)
	}
	return p, nil
}

// ParseSlot decodes a periodic task's payload.
func ParseSlot(t *asynq.Task) (SlotPayload, error) {
	var p SlotPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return p, fmt.Errorf("tasks: %s payload: %w: %w", t.Type(), err, asynq.SkipRetry)
	}
	return p, nil
}
