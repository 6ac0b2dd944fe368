package queue

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
	"wasessions/tasks"
)

// A running asynq server on a worker's queues is a live worker, with its
// advertised capacity and its own queue's backlog; once it stops, it is
// not listed any more.
func TestLiveWorkersLoadAndCapacity(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(testenv.NewRedisDB(t).Options())
	t.Cleanup(func() { rdb.Close() })
	e := New(rdb)
	ctx := context.Background()

	if ws, shared, err := e.LiveWorkers(ctx); err != nil || len(ws) != 0 || shared.Depth != 0 {
		t.Fatalf("no workers yet: %+v %+v %v", ws, shared, err)
	}
	if err := e.AdvertiseCapacity(ctx, "w1", 250); err != nil {
		t.Fatal(err)
	}
	// Backlog: one restore waiting on w1's queue (in an hour, so the
	// server below does not run it), one create on the shared queue.
	j, err := tasks.NewRestoreOn("whatsapp_u_1", 0, "test", testfactory.WorkerQueue(t, "w1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.Enqueue(j.Task, append(j.Opts, asynq.ProcessIn(time.Hour))...); err != nil {
		t.Fatal(err)
	}
	c, err := tasks.NewCreate("whatsapp_u_2", 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Enqueue(ctx, c, false); err != nil {
		t.Fatal(err)
	}

	start := func(queues map[string]int) *asynq.Server {
		srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Queues: queues, Concurrency: 3, LogLevel: asynq.FatalLevel})
		block := asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error { <-ctx.Done(); return ctx.Err() })
		if err := srv.Start(block); err != nil {
			t.Fatal(err)
		}
		return srv
	}
	w1 := start(map[string]int{testfactory.WorkerQueue(t, "w1"): 2})
	other := start(map[string]int{"unrelated": 1}) // not a worker: serves no wa:w:<id> queue
	defer other.Shutdown()

	var ws []LiveWorker
	var shared QueueLoad
	for deadline := time.Now().Add(30 * time.Second); ; {
		ws, shared, err = e.LiveWorkers(ctx)
		if err == nil && len(ws) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker never listed: %+v %v", ws, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	w := ws[0]
	if w.ID != "w1" || w.Capacity != 250 || w.Concurrency != 3 || w.Queue.Name != testfactory.WorkerQueue(t, "w1") || w.Queue.Depth != 1 || w.PID == 0 {
		t.Fatalf("worker %+v", w)
	}
	if shared.Name != tasks.QueueShared || shared.Depth != 1 {
		t.Fatalf("shared queue %+v, want depth 1", shared)
	}

	w1.Shutdown()
	for deadline := time.Now().Add(30 * time.Second); ; {
		ws, _, err = e.LiveWorkers(ctx)
		if err == nil && len(ws) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stopped worker still listed: %+v %v", ws, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
