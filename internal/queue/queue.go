// Package queue is asynq's one home on the producing side: the one place
// that puts tasks into asynq, decides which queue a command for a session
// goes to (ForSession), lists the running workers and reaps the queues of
// workers that are gone. (The worker serves queues through asynq's server,
// and the API's metrics and operator UI read asynq through its own
// libraries; nothing else touches asynq.) It turns
// asynq's task-id conflict into "already enqueued" (success), and clears the
// one kind of conflict that would otherwise block an id forever: a finished
// task (archived after its last retry, or retained after completion) still
// holding the id of work that is needed again.
package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"wasessions/tasks"
)

// Enqueuer enqueues tasks with deterministic ids, idempotently.
type Enqueuer struct {
	client    *asynq.Client
	inspector *asynq.Inspector
	rdb       redis.UniversalClient
}

// New builds an Enqueuer on the process's shared Redis client.
func New(rdb redis.UniversalClient) *Enqueuer {
	return &Enqueuer{
		client:    asynq.NewClientFromRedisClient(rdb),
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		rdb:       rdb,
	}
}

// Inspector is the asynq inspector on the same connection, for callers
// that look at queues (reaper, metrics).
func (e *Enqueuer) Inspector() *asynq.Inspector { return e.inspector }

// Result tells what Enqueue did.
type Result int

// Enqueue outcomes.
const (
	// Enqueued: a new task now exists.
	Enqueued Result = iota
	// AlreadyQueued: a live task with the same id exists (pending,
	// scheduled, active or retrying): the work is already on its way.
	AlreadyQueued
	// Retained: a finished task with the same id is retained on purpose
	// (a periodic slot that already ran); nothing was enqueued.
	Retained
)

func (r Result) String() string {
	switch r {
	case Enqueued:
		return "enqueued"
	case AlreadyQueued:
		return "already_queued"
	default:
		return "retained"
	}
}

// Enqueue puts the job on its queue. A conflicting id is success
// (AlreadyQueued). When the conflicting task is archived, i.e. it gave up,
// it is deleted and the job enqueued in its place, because the caller needs
// that work done now. A conflicting completed task is kept when
// keepCompleted is true (periodic slots) and replaced otherwise.
func (e *Enqueuer) Enqueue(ctx context.Context, j tasks.Job, keepCompleted bool) (Result, error) {
	for attempt := 0; ; attempt++ {
		_, err := e.client.EnqueueContext(ctx, j.Task, j.Opts...)
		if err == nil {
			return Enqueued, nil
		}
		if !errors.Is(err, asynq.ErrTaskIDConflict) {
			return 0, fmt.Errorf("queue: enqueue %s %s: %w", j.Task.Type(), j.ID, err)
		}
		if attempt > 0 {
			// Someone else enqueued it between our delete and retry.
			return AlreadyQueued, nil
		}
		existing, err := e.inspector.GetTaskInfo(j.Queue, j.ID)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound):
			continue // it finished between the two calls: enqueue again
		case err != nil:
			return 0, fmt.Errorf("queue: inspect %s/%s: %w", j.Queue, j.ID, err)
		}
		switch existing.State {
		case asynq.TaskStateCompleted:
			if keepCompleted {
				return Retained, nil
			}
		case asynq.TaskStateArchived:
		default:
			return AlreadyQueued, nil
		}
		if err := e.inspector.DeleteTask(j.Queue, j.ID); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			return 0, fmt.Errorf("queue: delete finished %s/%s: %w", j.Queue, j.ID, err)
		}
	}
}
