// Package worker hosts whatsmeow clients for sessions and keeps the
// design's promise about them: at most one live client per session across
// all workers (leases with epoch fencing, renewed by one statement per
// heartbeat, and given up by the worker's own clock before they can run out
// in Postgres), and no re-scan after any restart (graceful handoff on
// SIGTERM, restore from stored keys otherwise).
//
// The asynq handlers (handlers.go) start and end hosting; a client then
// lives in the worker's registry, not inside a running handler. Each hosted
// session (session.go) serialises everything that happens to it, whatsmeow
// events and commands alike, through one goroutine, so its writes to
// Postgres happen in the order the events did.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"wasessions/internal/events"
	"wasessions/internal/queue"
	"wasessions/internal/store"
	"wasessions/internal/wa"
	"wasessions/tasks"
)

// Config is the part of the service configuration a worker uses.
type Config struct {
	// WorkerID is this worker's stable id; its queue is wa:w:<WorkerID>.
	WorkerID string
	// LeaseTTL is the lease length; heartbeats run every LeaseTTL/3.
	LeaseTTL time.Duration
	// SessionTTL is how far a connected session's expiry slides.
	SessionTTL time.Duration
	// MaxSessions caps the clients this worker hosts.
	MaxSessions int
	// RestoreConcurrency caps restores connecting at once.
	RestoreConcurrency int
	// RebalanceMaxMoves caps the sessions a reconcile pass run by this
	// worker moves between workers to even out load; 0 disables it.
	RebalanceMaxMoves int
	// Pacing is each session's send rate (SEND_RATE, SEND_BURST); zero
	// PerMinute sends as fast as WhatsApp acks.
	Pacing store.Pacing
	// MessageTTL is how long an outbound message may wait (default 1h).
	MessageTTL time.Duration
	// MessageRetention is how long messages of ended sessions are kept
	// (the cleanup's; default 7 days).
	MessageRetention time.Duration
	// ConnectTimeout bounds the wait for a first QR code or for a restored
	// client to log in. Default 30s.
	ConnectTimeout time.Duration
	// ReleaseAfter is how long a linked session may stay without a
	// connection before it is handed to another worker. Default 5m.
	ReleaseAfter time.Duration
	// RetryMax caps the reconnect backoff. Default 2m.
	RetryMax time.Duration
	// VersionRefresh is how often the client version is fetched again
	// (when fetching is on, see wa.Versions). Default 6h.
	VersionRefresh time.Duration
}

// Deps are the worker's collaborators.
type Deps struct {
	Store *store.Store
	// Leases runs the statements that keep leases alive (the heartbeat,
	// a held claim) on a small pool of its own, so that a pool saturated
	// by whatsmeow's key store and the session writes cannot make them
	// wait until the fence check stops every client. nil uses Store.
	Leases   *store.Store
	Enqueuer *queue.Enqueuer
	Bus      *events.Bus
	Host     *wa.Host
	Metrics  *Metrics
	// Log receives the worker's lines; it carries worker_id already
	// (cmd/worker adds it once for every line of the process).
	Log *slog.Logger
}

// Worker hosts sessions. Create it with New, register Mux on an asynq
// server, run Run for the lease heartbeat, and call Shutdown on SIGTERM.
type Worker struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	mu       sync.Mutex
	sessions map[string]*hosted
	busy     map[string]bool // sessions a handler is claiming or ending right now
	closing  bool

	ownQueue     string // served only by this worker (tasks.WorkerQueue)
	restoreSlots chan struct{}
	wg           sync.WaitGroup // hosted sessions' goroutines
	events       *publisher

	hooks hooks
}

// hooks let a test hold the worker at the exact point of a race window a
// few microseconds wide, instead of hoping a sleep lands in it. All are nil
// outside tests (export_test.go sets them); each costs one nil check.
type hooks struct {
	// beforeRenew runs in the heartbeat after it took the snapshot of
	// hosted sessions and before it sends the renewal.
	beforeRenew func()
	// beforeEvent runs in whatsmeow's goroutine with each event a hosted
	// session's loop handles, before it is passed to the loop.
	beforeEvent func(evt any)
	// beforeWAEvent runs in whatsmeow's goroutine with each event the
	// message handler (onWAEvent) gets, before it handles it.
	beforeWAEvent func(evt any)
	// hostReturns runs in a create or restore task's handler once the
	// hosting it started has reached its first milestone (or ended), just
	// before the handler returns and asynq retires the task.
	hostReturns func(sessionID string)
	// takeoverEnqueued runs after a release enqueued the session's
	// takeover task, with Enqueue's answer.
	takeoverEnqueued func(sessionID string, res queue.Result, err error)
	// afterLeaveWrite runs in a release or an end after the write that
	// gives the lease up and before the client is stopped.
	afterLeaveWrite func(sessionID string)
	// leaseLostChecked runs when leaseLost has dealt with a session a
	// heartbeat found lost.
	leaseLostChecked func(sessionID string)
	// sendAcked runs in a session's sender when WhatsApp has acked a
	// message, before the worker records it as sent.
	sendAcked func(sessionID, messageID string)
	// sentRecorded runs in a session's sender after the write that records
	// a message sent, before its event is published.
	sentRecorded func(sessionID, messageID string)
}

// New returns a Worker; cfg.WorkerID must be set (it names the worker's
// own queue).
func New(cfg Config, deps Deps) (*Worker, error) {
	own, err := tasks.WorkerQueue(cfg.WorkerID)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	if cfg.RestoreConcurrency <= 0 {
		cfg.RestoreConcurrency = 4
	}
	if cfg.ReleaseAfter <= 0 {
		cfg.ReleaseAfter = 5 * time.Minute
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 2 * time.Minute
	}
	if cfg.VersionRefresh <= 0 {
		cfg.VersionRefresh = 6 * time.Hour
	}
	if cfg.MessageTTL <= 0 {
		cfg.MessageTTL = time.Hour
	}
	if deps.Leases == nil {
		deps.Leases = deps.Store
	}
	return &Worker{
		cfg:          cfg,
		deps:         deps,
		log:          deps.Log,
		sessions:     map[string]*hosted{},
		busy:         map[string]bool{},
		ownQueue:     own,
		restoreSlots: make(chan struct{}, cfg.RestoreConcurrency),
		events:       newPublisher(deps.Bus, deps.Log),
	}, nil
}

// Queues are the asynq queues this worker serves, with priorities: its own
// queue first (commands for clients only it holds), then the shared one.
func (w *Worker) Queues() map[string]int {
	return map[string]int{w.ownQueue: 6, tasks.QueueShared: 3}
}

// Mux routes every task type to its handler.
func (w *Worker) Mux() *asynq.ServeMux {
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeSessionCreate, w.instrument(tasks.TypeSessionCreate, w.handleCreate))
	mux.HandleFunc(tasks.TypeSessionRestore, w.instrument(tasks.TypeSessionRestore, w.handleRestore))
	mux.HandleFunc(tasks.TypeSessionDisconnect, w.instrument(tasks.TypeSessionDisconnect, w.handleDisconnect))
	mux.HandleFunc(tasks.TypeSessionHandoff, w.instrument(tasks.TypeSessionHandoff, w.handleHandoff))
	mux.HandleFunc(tasks.TypeSessionsReconcile, w.instrument(tasks.TypeSessionsReconcile, w.handleReconcile))
	mux.HandleFunc(tasks.TypeSessionsCleanup, w.instrument(tasks.TypeSessionsCleanup, w.handleCleanup))
	mux.HandleFunc(tasks.TypeMessagesSend, w.instrument(tasks.TypeMessagesSend, w.handleSend))
	return mux
}

// RetryDelay is the asynq server's RetryDelayFunc for a worker: it backs
// off exponentially from 1 s to at most 1 min, so session tasks are retried
// soon (a full worker, a Postgres blip), never for hours. asynq's default
// waits 15 – 45 s before the first retry, and the reconciler cannot
// enqueue a takeover sooner under the same task id.
func RetryDelay(n int, _ error, _ *asynq.Task) time.Duration {
	d := time.Second << min(n, 6)
	if d > time.Minute {
		d = time.Minute
	}
	return d
}

// errSkipped marks a task that had nothing to do (already done, or no
// longer wanted); it is reported as success to asynq.
var errSkipped = errors.New("nothing to do")

func (w *Worker) instrument(typ string, h func(context.Context, *asynq.Task) error) asynq.HandlerFunc {
	return func(ctx context.Context, t *asynq.Task) error {
		start := time.Now()
		err := h(ctx, t)
		w.deps.Metrics.TaskDuration.WithLabelValues(typ).Observe(time.Since(start).Seconds())
		switch {
		case err == nil:
			w.deps.Metrics.Tasks.WithLabelValues(typ, "ok").Inc()
		case errors.Is(err, errSkipped):
			w.deps.Metrics.Tasks.WithLabelValues(typ, "skipped").Inc()
			return nil
		default:
			w.deps.Metrics.Tasks.WithLabelValues(typ, "error").Inc()
			id, _ := asynq.GetTaskID(ctx)
			w.log.WarnContext(ctx, "task failed", "task_type", typ, "task_id", id, "error", err)
		}
		return err
	}
}

// Hosted is the number of sessions this worker hosts.
func (w *Worker) Hosted() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.sessions)
}

func (w *Worker) lookup(sessionID string) *hosted {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sessions[sessionID]
}

var (
	errWorkerFull    = errors.New("worker: at WORKER_MAX_SESSIONS")
	errWorkerClosing = errors.New("worker: shutting down")
)

// add registers h unless the session is hosted already or the worker is
// full or closing.
func (w *Worker) add(h *hosted) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.closing:
		return errWorkerClosing
	case w.sessions[h.id] != nil:
		return errSkipped
	case len(w.sessions) >= w.cfg.MaxSessions:
		return errWorkerFull
	}
	w.sessions[h.id] = h
	w.deps.Metrics.Hosted.Set(float64(len(w.sessions)))
	return nil
}

// begin marks a session as being worked on by one handler of this worker;
// a second concurrent handler for it (a duplicate delivery, or the
// post-restart restore racing a restore task) backs off instead of claiming
// again, which would bump the epoch and fence out the first.
func (w *Worker) begin(sessionID string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.busy[sessionID] {
		return false
	}
	w.busy[sessionID] = true
	return true
}

func (w *Worker) finish(sessionID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.busy, sessionID)
}

func (w *Worker) remove(h *hosted) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sessions[h.id] == h {
		delete(w.sessions, h.id)
	}
	w.deps.Metrics.Hosted.Set(float64(len(w.sessions)))
}

func (w *Worker) snapshot() []*hosted {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*hosted, 0, len(w.sessions))
	for _, h := range w.sessions {
		out = append(out, h)
	}
	return out
}

// publish queues a session event (see publisher); a Redis hiccup costs a
// live update, never state (Postgres has it).
func (w *Worker) publish(typ string, s store.Session) {
	w.events.publish(events.FromSession(typ, s))
}
