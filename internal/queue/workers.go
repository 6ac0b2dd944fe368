package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"wasessions/internal/store"
	"wasessions/tasks"
)

// ForSession is the queue a command for session s goes to: its owner's
// own queue while a worker holds a live lease on it (only that process has
// the client, so only it can act on it), wa:shared otherwise, where any
// worker claims it. Every command that targets a session's client routes
// through here.
func ForSession(s store.Session) string {
	if s.LeaseLive && s.WorkerID != nil {
		if q, err := tasks.WorkerQueue(*s.WorkerID); err == nil {
			return q
		}
	}
	return tasks.QueueShared
}

// Worker is a worker process as asynq's list of servers shows it: one that
// serves its own queue.
type Worker struct {
	ID string
	// Active: the server takes tasks. A worker that received SIGTERM stays
	// listed, as stopped, while it hands its sessions off and until it exits.
	Active bool
}

// serverActive is the status asynq publishes for a server that takes
// tasks; a server that received SIGTERM is listed as "stopped" until it
// exits.
const serverActive = "active"

// Workers lists the workers whose asynq server is running (its
// registration in Redis not yet expired), by the worker queues they serve.
func (e *Enqueuer) Workers() ([]Worker, error) {
	servers, err := e.inspector.Servers()
	if err != nil {
		return nil, fmt.Errorf("queue: list servers: %w", err)
	}
	byID := map[string]bool{}
	for _, srv := range servers {
		for q := range srv.Queues {
			if id, ok := tasks.WorkerIDFromQueue(q); ok {
				byID[id] = byID[id] || srv.Status == serverActive
			}
		}
	}
	out := make([]Worker, 0, len(byID))
	for id, active := range byID {
		out = append(out, Worker{ID: id, Active: active})
	}
	return out, nil
}

// ReapWorkerQueues drains the queues of workers that no running asynq
// server serves any more back to wa:shared, and deletes them. A worker that
// comes back simply gets its queue created again on the next enqueue.
//
// Each waiting disconnect (pending, scheduled or retrying) is enqueued on
// wa:shared and then deleted from the dead queue, so it is moved once.
// Tasks that were active on the dead worker (it was killed mid-task) cannot
// be moved: asynq recovers them only on a server of that queue, and
// refuses to delete a queue with active tasks. Such a queue is left in
// place, emptied of everything else, until a worker with that id returns;
// the reconciler already covers the work its orphaned tasks stood for. It
// does not stop the other dead queues from being reaped.
func (e *Enqueuer) ReapWorkerQueues(ctx context.Context, log *slog.Logger) (int, error) {
	in := e.inspector
	queues, err := in.Queues()
	if err != nil {
		return 0, fmt.Errorf("queue: list queues: %w", err)
	}
	workers, err := e.Workers()
	if err != nil {
		return 0, err
	}
	served := map[string]bool{}
	for _, w := range workers {
		served[w.ID] = true
	}
	reaped := 0
	for _, q := range queues {
		workerID, ok := tasks.WorkerIDFromQueue(q)
		if !ok || served[workerID] {
			continue
		}
		if err := e.drainToShared(ctx, q); err != nil {
			if errors.Is(err, asynq.ErrQueueNotFound) {
				continue // another reconciler reaped it meanwhile
			}
			return reaped, err
		}
		if err := in.DeleteQueue(q, true); err != nil {
			if errors.Is(err, asynq.ErrQueueNotFound) {
				continue
			}
			if info, ierr := in.GetQueueInfo(q); ierr == nil && info.Active > 0 {
				log.WarnContext(ctx, "the queue of a worker that is gone keeps tasks it was running when it died; left in place",
					"worker_id", workerID, "queue", q, "active", info.Active)
				continue
			}
			return reaped, fmt.Errorf("queue: delete %s: %w", q, err)
		}
		reaped++
		log.InfoContext(ctx, "reaped the queue of a worker that is gone", "worker_id", workerID, "queue", q)
	}
	return reaped, nil
}

// drainToShared moves every waiting disconnect task of queue q to
// wa:shared: enqueued there first (deduplicated by task id), then deleted
// from q.
func (e *Enqueuer) drainToShared(ctx context.Context, q string) error {
	in := e.inspector
	const pageSize = 500
	for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		in.ListPendingTasks, in.ListScheduledTasks, in.ListRetryTasks,
	} {
		// Moved tasks leave the list; the others stay at its head, in
		// order. Page past those (seen), never past one not yet looked at.
		seen := map[string]bool{}
		for page := 1; ; page = len(seen)/pageSize + 1 {
			infos, err := list(q, asynq.PageSize(pageSize), asynq.Page(page))
			if err != nil {
				return fmt.Errorf("queue: list %s: %w", q, err)
			}
			for _, info := range infos {
				if seen[info.ID] {
					continue
				}
				p, err := tasks.ParseSession(asynq.NewTask(info.Type, info.Payload))
				if info.Type != tasks.TypeSessionDisconnect || err != nil {
					seen[info.ID] = true
					continue
				}
				j, err := tasks.NewDisconnect(p.SessionID, p.Reason, tasks.QueueShared)
				if err != nil {
					return err
				}
				if _, err := e.Enqueue(ctx, j, false); err != nil {
					return err
				}
				if err := in.DeleteTask(q, info.ID); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
					return fmt.Errorf("queue: delete %s/%s: %w", q, info.ID, err)
				}
			}
			if len(infos) < pageSize {
				break
			}
		}
	}
	return nil
}

// Process is the process a worker runs in, as asynq registers its server:
// host name and PID.
type Process struct {
	Host string
	PID  int
	// Alive reports whether a process with this PID runs on Host (this
	// machine); nil treats every PID as alive.
	Alive func(pid int) bool
}

// ErrWorkerIDInUse: another running process already serves the worker's
// own queue under the same WORKER_ID.
var ErrWorkerIDInUse = errors.New("another running worker uses this WORKER_ID")

// AwaitWorkerIDFree returns nil once no other process serves workerID's
// queue, waiting up to wait for one to go (or for Redis to answer), or
// ErrWorkerIDInUse (naming it), or Redis's error if it never answered. Two live processes with one id would take each other's sessions
// (a claim by the same worker id is always granted, and a worker takes its
// id's sessions back when it starts) and split the tasks meant for one
// process. Call it before this process starts its own asynq server.
//
// asynq keeps a registration for up to two heartbeats (10 s) after its
// process died. One left by an earlier process on this host, whose PID is
// gone or is this process's own (a container's PID 1 restarted), is no
// other worker: a worker restarted after SIGKILL takes its sessions back
// at once. A registration from another host, or from a live PID, is waited
// on: it disappears within 10 s if its process died, and when the process
// exits after a SIGTERM handoff.
func (e *Enqueuer) AwaitWorkerIDFree(ctx context.Context, workerID string, self Process, wait time.Duration) error {
	q, err := tasks.WorkerQueue(workerID)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(wait)
	for {
		servers, err := e.inspector.Servers()
		if err != nil {
			// Redis away (a restart, a failover): whether another process
			// uses the id is unknown until it answers, so wait for it
			// within the same wait rather than exit and be restarted with
			// a growing back-off (TestAwaitWorkerIDFreeWaitsForRedis).
			if time.Now().After(deadline) {
				return fmt.Errorf("queue: list servers: %w", err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		var other *asynq.ServerInfo
		for _, srv := range servers {
			if _, ok := srv.Queues[q]; !ok {
				continue
			}
			if srv.Host == self.Host && (srv.PID == self.PID || self.Alive != nil && !self.Alive(srv.PID)) {
				continue // an earlier process of this host, gone
			}
			other = srv
			break
		}
		if other == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s serves %s (host %s, pid %d, %s since %s)", ErrWorkerIDInUse,
				other.ID, q, other.Host, other.PID, other.Status, other.Started.UTC().Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
