package queue

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"wasessions/tasks"
)

// capacityKey is the Redis hash of each worker's advertised capacity
// (WORKER_MAX_SESSIONS), field = worker id. asynq's server record carries
// task concurrency, not how many clients a worker may host, so workers
// write this once at start. Entries of workers that are gone stay (one
// small field per worker id ever used) but are never shown: only workers
// asynq reports alive are listed.
const capacityKey = "wa:workers:capacity"

// AdvertiseCapacity records how many sessions workerID hosts at most.
func (e *Enqueuer) AdvertiseCapacity(ctx context.Context, workerID string, capacity int) error {
	if err := e.rdb.HSet(ctx, capacityKey, workerID, capacity).Err(); err != nil {
		return fmt.Errorf("queue: advertise capacity of %s: %w", workerID, err)
	}
	return nil
}

// QueueLoad is one queue's backlog.
type QueueLoad struct {
	Name string
	// Depth is the tasks waiting or running: pending, active, scheduled
	// and retrying (archived and completed ones are history, not load).
	Depth int
	// Latency is the age of the oldest pending task.
	Latency time.Duration
}

// LiveWorker is a worker process asynq currently reports alive (its
// server heartbeat is fresh), with its own queue's backlog.
type LiveWorker struct {
	ID      string
	Host    string
	PID     int
	Started time.Time
	// Concurrency is how many tasks it runs at once; ActiveTasks how many
	// it runs now.
	Concurrency int
	ActiveTasks int
	// Capacity is its advertised WORKER_MAX_SESSIONS, 0 if unknown.
	Capacity int
	Queue    QueueLoad
}

// LiveWorkers lists the running workers, by id, and the shared queue's
// backlog. A worker id is known from the queue it serves (wa:w:<id>); a
// process serving no worker queue (none today) is not a worker.
//
// asynq's inspector takes no context, so on a Redis that accepts
// connections and never answers each of its calls would wait go-redis's
// read timeout per attempt. A ping under ctx goes first: a hang already
// under way (what an operator's dashboard polls through during an outage)
// fails at ctx's deadline; only one that begins between the ping and the
// inspector's reads still waits the timeouts.
func (e *Enqueuer) LiveWorkers(ctx context.Context) ([]LiveWorker, QueueLoad, error) {
	if err := e.rdb.Ping(ctx).Err(); err != nil {
		return nil, QueueLoad{}, fmt.Errorf("queue: ping: %w", err)
	}
	servers, err := e.inspector.Servers()
	if err != nil {
		return nil, QueueLoad{}, fmt.Errorf("queue: list servers: %w", err)
	}
	capacity, err := e.rdb.HGetAll(ctx, capacityKey).Result()
	if err != nil {
		return nil, QueueLoad{}, fmt.Errorf("queue: read capacities: %w", err)
	}
	// GetQueueInfo does not tell a queue asynq has never seen from other
	// errors, so ask which queues exist first.
	names, err := e.inspector.Queues()
	if err != nil {
		return nil, QueueLoad{}, fmt.Errorf("queue: list queues: %w", err)
	}
	known := make(map[string]bool, len(names))
	for _, n := range names {
		known[n] = true
	}
	var out []LiveWorker
	for _, srv := range servers {
		for q := range srv.Queues {
			id, ok := tasks.WorkerIDFromQueue(q)
			if !ok {
				continue
			}
			load, err := e.load(q, known[q])
			if err != nil {
				return nil, QueueLoad{}, err
			}
			c, _ := strconv.Atoi(capacity[id]) // absent or foreign: unknown (0)
			out = append(out, LiveWorker{
				ID: id, Host: srv.Host, PID: srv.PID, Started: srv.Started,
				Concurrency: srv.Concurrency, ActiveTasks: len(srv.ActiveWorkers),
				Capacity: c, Queue: load,
			})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	shared, err := e.load(tasks.QueueShared, known[tasks.QueueShared])
	if err != nil {
		return nil, QueueLoad{}, err
	}
	return out, shared, nil
}

// load reads one queue's backlog; a queue asynq has not seen yet (known
// false) is empty.
func (e *Enqueuer) load(q string, known bool) (QueueLoad, error) {
	if !known {
		return QueueLoad{Name: q}, nil
	}
	info, err := e.inspector.GetQueueInfo(q)
	if err != nil {
		return QueueLoad{}, fmt.Errorf("queue: info of %s: %w", q, err)
	}
	return QueueLoad{Name: q, Depth: info.Pending + info.Active + info.Scheduled + info.Retry, Latency: info.Latency}, nil
}
