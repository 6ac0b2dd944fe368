// Package scheduler enqueues the service's periodic work: a reconcile pass at
// start and at every RESTORE_INTERVAL boundary, and an expired-session
// cleanup at every firing of CLEANUP_CRON.
//
// Any number of replicas may run, with no leader election. Each periodic
// task is built for its *scheduled* time slot (the boundary or cron fire
// time, identical on every replica), and its task id names that slot
// (tasks.NewReconcile, tasks.NewCleanup). The first replica to enqueue a
// slot wins; the others find a live task (queue.AlreadyQueued) or, once it
// has run, a completed task retained under the same id (queue.Retained).
// So every slot runs once, however many replicas fire for it.
//
// asynq's own Scheduler is not used because it fixes a task's options,
// TaskID included, when the entry is registered, so it cannot give each
// firing its own id.
//
// The scheduler never gives up: an enqueue that fails (Redis down) is
// logged and retried with backoff until it succeeds or a newer slot of the
// same kind supersedes it, and the start-up session count is retried until
// Postgres answers (and the api or worker has created the schema).
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/robfig/cron/v3"

	"wasessions/internal/queue"
	"wasessions/internal/store"
	"wasessions/tasks"
)

// Clock is the scheduler's source of wall time. Slots are wall-clock times
// shared by all replicas, so the scheduler asks the clock, not a ticker;
// tests inject a clock they move by hand.
type Clock interface {
	// Now is the current wall time.
	Now() time.Time
	// WakeAt returns a channel that receives once the clock has reached t
	// (at once if it already has). The scheduler re-reads Now after every
	// wake-up, so an early or late wake-up costs nothing but a loop turn.
	WakeAt(t time.Time) <-chan time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// WakeAt waits the wall-clock distance to t as it is now. Go timers follow
// the monotonic clock, so a wall-clock step delays the wake-up; Run bounds
// every wait by maxSleep to limit that.
func (SystemClock) WakeAt(t time.Time) <-chan time.Time { return time.After(time.Until(t)) }

// Enqueuer puts a job into asynq; *queue.Enqueuer is the implementation.
// keepCompleted is always true here: a completed task retained under a
// slot's id means the slot already ran.
type Enqueuer interface {
	Enqueue(ctx context.Context, j tasks.Job, keepCompleted bool) (queue.Result, error)
}

// Counter counts the sessions that should be hosted, for the start-up log
// line operators rely on (docs/ARCHITECTURE.md, "Compatibility");
// *store.Store is the implementation.
type Counter interface {
	CountLinked(ctx context.Context) (int64, error)
}

// Kind names a periodic job.
type Kind string

// The periodic jobs.
const (
	KindReconcile Kind = "reconcile"
	KindCleanup   Kind = "cleanup"
)

// Fire reports one enqueue attempt for a slot: to OnFire, and in the log.
type Fire struct {
	Kind Kind
	// Slot is the scheduled time the task stands for (UTC).
	Slot time.Time
	// TaskID is the slot's asynq task id.
	TaskID string
	// Result is what the enqueue did; meaningless when Err is set.
	Result queue.Result
	// Err is why the enqueue failed; it will be retried.
	Err error
}

// Config is what to schedule.
type Config struct {
	// CleanupCron is a standard 5-field cron expression, evaluated in UTC
	// unless it starts with CRON_TZ=<zone> (every replica must agree on the
	// zone, which UTC guarantees).
	CleanupCron string
	// RestoreInterval is the reconcile period; slots are the instants
	// truncated to it (time.Truncate), the same on every replica.
	RestoreInterval time.Duration
}

// Deps are the scheduler's collaborators.
type Deps struct {
	Enqueuer Enqueuer
	// Sessions, when set, is counted at start for "Loaded N existing
	// sessions".
	Sessions Counter
	Log      *slog.Logger
	// Clock defaults to SystemClock.
	Clock Clock
	// OnFire, when set, is called after every enqueue attempt, from the
	// scheduler's goroutine; tests and metrics observe the scheduler here.
	OnFire func(Fire)
	// RetryMin and RetryMax bound the backoff between retries of a failed
	// enqueue or count (defaults 1s and 30s).
	RetryMin, RetryMax time.Duration
}

// Scheduler is one replica's periodic enqueuer; see the package doc.
type Scheduler struct {
	cfg     Config
	d       Deps
	cleanup cron.Schedule
}

// maxSleep bounds every wait, so a step of the wall clock (which Go timers
// do not follow) delays a firing by at most this much.
const maxSleep = 30 * time.Second

// enqueueTimeout bounds one enqueue, so a hung Redis cannot stall the loop.
const enqueueTimeout = 10 * time.Second

// New checks cfg and returns a scheduler ready to Run.
func New(cfg Config, d Deps) (*Scheduler, error) {
	sched, err := cron.ParseStandard(cfg.CleanupCron)
	if err != nil {
		return nil, fmt.Errorf("scheduler: CLEANUP_CRON %q: %w", cfg.CleanupCron, err)
	}
	if cfg.RestoreInterval <= 0 {
		return nil, fmt.Errorf("scheduler: RESTORE_INTERVAL must be positive, got %s", cfg.RestoreInterval)
	}
	if d.Enqueuer == nil {
		return nil, errors.New("scheduler: no enqueuer")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Clock == nil {
		d.Clock = SystemClock{}
	}
	if d.RetryMin <= 0 {
		d.RetryMin = time.Second
	}
	if d.RetryMax < d.RetryMin {
		d.RetryMax = max(30*time.Second, d.RetryMin)
	}
	return &Scheduler{cfg: cfg, d: d, cleanup: sched}, nil
}

// ReconcileSlot is the reconcile slot that contains now: now truncated to
// interval, in UTC. time.Truncate counts from the zero time, not from any
// replica's start, so all replicas agree.
func ReconcileSlot(now time.Time, interval time.Duration) time.Time {
	return now.UTC().Truncate(interval)
}

// DueSlot returns the latest fire time of sched in [next, now] and the first
// fire time after now. next must be a fire time of sched that is not after
// now. After a stall (a suspended host, a long GC pause) the missed firings
// collapse into the latest one: a cleanup or reconcile pass covers all the
// work of the passes it replaces.
func DueSlot(sched cron.Schedule, next, now time.Time) (slot, following time.Time) {
	slot = next.UTC()
	now = now.UTC()
	for {
		n := sched.Next(slot)
		if n.IsZero() || n.After(now) {
			return slot, n
		}
		slot = n
	}
}

// retry is a failed attempt waiting for its next try.
type retry struct {
	slot    time.Time
	at      time.Time
	backoff time.Duration
}

// Run schedules until ctx ends, then returns nil. It enqueues the current
// reconcile slot at once, logs the number of linked sessions, and then
// fires at every reconcile boundary and cleanup cron time.
func (s *Scheduler) Run(ctx context.Context) error {
	clock := s.d.Clock
	now := clock.Now()
	retries := map[Kind]*retry{}

	var countRetry *retry
	if s.d.Sessions != nil {
		if !s.logCount(ctx) {
			countRetry = &retry{at: now.Add(s.d.RetryMin), backoff: s.d.RetryMin}
		}
	}

	slot := ReconcileSlot(now, s.cfg.RestoreInterval)
	s.fire(ctx, KindReconcile, slot, now, retries)
	nextReconcile := slot.Add(s.cfg.RestoreInterval)
	nextCleanup := s.cleanup.Next(now.UTC())
	s.d.Log.InfoContext(ctx, "scheduler started",
		"cleanup_cron", s.cfg.CleanupCron, "restore_interval", s.cfg.RestoreInterval.String(),
		"next_reconcile", nextReconcile, "next_cleanup", nextCleanup)

	for {
		wake := now.Add(maxSleep)
		wake = earliest(wake, nextReconcile)
		if !nextCleanup.IsZero() {
			wake = earliest(wake, nextCleanup)
		}
		for _, r := range retries {
			wake = earliest(wake, r.at)
		}
		if countRetry != nil {
			wake = earliest(wake, countRetry.at)
		}
		select {
		case <-ctx.Done():
			s.d.Log.InfoContext(context.WithoutCancel(ctx), "scheduler stopped")
			return nil
		case <-clock.WakeAt(wake):
		}
		now = clock.Now()

		fired := map[Kind]bool{}
		if !now.Before(nextReconcile) {
			slot := ReconcileSlot(now, s.cfg.RestoreInterval)
			s.fire(ctx, KindReconcile, slot, now, retries)
			fired[KindReconcile] = true
			nextReconcile = slot.Add(s.cfg.RestoreInterval)
		}
		if !nextCleanup.IsZero() && !now.Before(nextCleanup) {
			var slot time.Time
			slot, nextCleanup = DueSlot(s.cleanup, nextCleanup, now)
			s.fire(ctx, KindCleanup, slot, now, retries)
			fired[KindCleanup] = true
		}
		for kind, r := range retries {
			if !fired[kind] && !now.Before(r.at) {
				s.fire(ctx, kind, r.slot, now, retries)
			}
		}
		if countRetry != nil && !now.Before(countRetry.at) {
			if s.logCount(ctx) {
				countRetry = nil
			} else {
				countRetry.backoff = s.nextBackoff(countRetry.backoff)
				countRetry.at = now.Add(countRetry.backoff)
			}
		}
	}
}

// fire enqueues kind's task for slot, and records a retry if that failed.
// A newer slot of a kind replaces the older one waiting for retry: either
// pass covers what the other would have done.
func (s *Scheduler) fire(ctx context.Context, kind Kind, slot, now time.Time, retries map[Kind]*retry) {
	f := Fire{Kind: kind, Slot: slot.UTC()}
	j, err := s.job(kind, slot)
	if err == nil {
		f.TaskID = j.ID
		ectx, cancel := context.WithTimeout(ctx, enqueueTimeout)
		f.Result, err = s.d.Enqueuer.Enqueue(ectx, j, true)
		cancel()
	}
	f.Err = err
	log := s.d.Log.With("kind", string(kind), "slot", f.Slot, "task_id", f.TaskID)
	if err != nil {
		backoff := s.d.RetryMin
		if r, ok := retries[kind]; ok && r.slot.Equal(f.Slot) {
			backoff = s.nextBackoff(r.backoff)
		}
		retries[kind] = &retry{slot: f.Slot, at: now.Add(backoff), backoff: backoff}
		if ctx.Err() == nil {
			log.WarnContext(ctx, "scheduler: enqueue failed; will retry", "error", err, "retry_in", backoff.String())
		}
	} else {
		delete(retries, kind)
		switch f.Result {
		case queue.Enqueued:
			log.InfoContext(ctx, "scheduled task enqueued", "result", f.Result.String())
		default:
			// Another replica (or an earlier run of this one) has the slot.
			log.DebugContext(ctx, "scheduled task already taken", "result", f.Result.String())
		}
	}
	if s.d.OnFire != nil {
		s.d.OnFire(f)
	}
}

// job builds the task for a slot. A cleanup slot's completed task is kept
// for two cron periods, so replicas whose clocks disagree by less than a
// period still find it; NewReconcile keeps its own for two intervals.
func (s *Scheduler) job(kind Kind, slot time.Time) (tasks.Job, error) {
	switch kind {
	case KindReconcile:
		return tasks.NewReconcile(slot, s.cfg.RestoreInterval)
	case KindCleanup:
		retention := time.Hour
		if n := s.cleanup.Next(slot.UTC()); !n.IsZero() {
			retention = 2 * n.Sub(slot)
		}
		return tasks.NewCleanup(slot, retention)
	}
	return tasks.Job{}, fmt.Errorf("scheduler: unknown kind %q", kind)
}

// logCount logs "Loaded N existing sessions", the start-up line, and
// reports whether it could. Postgres may be down, or the schema not there
// yet (the api and worker migrate, not the scheduler): both are retried.
func (s *Scheduler) logCount(ctx context.Context) bool {
	cctx, cancel := context.WithTimeout(ctx, enqueueTimeout)
	defer cancel()
	n, err := s.d.Sessions.CountLinked(cctx)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return false
	case store.IsSchemaMissing(err):
		// A fresh database: expected until an api or worker has started.
		s.d.Log.InfoContext(ctx, "scheduler: waiting for the api or a worker to create the database schema")
		return false
	default:
		s.d.Log.WarnContext(ctx, "scheduler: could not count sessions; will retry", "error", err)
		return false
	}
	s.d.Log.InfoContext(ctx, fmt.Sprintf("Loaded %d existing sessions", n), "count", n)
	return true
}

func (s *Scheduler) nextBackoff(b time.Duration) time.Duration {
	return min(max(2*b, s.d.RetryMin), s.d.RetryMax)
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
