package queue_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"wasessions/internal/queue"
	"wasessions/internal/store"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
	"wasessions/tasks"
)

// A command reaches the process that holds the session's client while its
// lease is live, and any worker otherwise.
func TestForSession(t *testing.T) {
	w1 := "w-1"
	for _, tc := range []struct {
		name string
		s    store.Session
		want string
	}{
		{"hosted: its owner's queue", store.Session{WorkerID: &w1, LeaseLive: true}, testfactory.WorkerQueue(t, w1)},
		{"lease lapsed: any worker", store.Session{WorkerID: &w1, LeaseLive: false}, tasks.QueueShared},
		{"never hosted", store.Session{}, tasks.QueueShared},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := queue.ForSession(tc.s); got != tc.want {
				t.Errorf("ForSession = %q, want %q", got, tc.want)
			}
		})
	}
}

// Workers names the workers asynq lists by their own queues, not the
// shared queue every worker also serves.
func TestWorkers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	testfactory.AsynqServer(t, e.rdb, testfactory.WorkerQueue(t, "a"))
	testfactory.AsynqServer(t, e.rdb, tasks.QueueShared)
	got, err := e.enq.Workers()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != (queue.Worker{ID: "a", Active: true}) {
		t.Fatalf("Workers() = %+v, want worker a, active", got)
	}
}

// A worker refuses to start under a WORKER_ID another live process serves,
// but not because of the registration an earlier process of this host
// left when it was killed (issue 9, suspicion c).
func TestAwaitWorkerIDFree(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	testfactory.AsynqServer(t, e.rdb, testfactory.WorkerQueue(t, "dup")) // this process, this host
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		id    string
		self  queue.Process
		inUse bool
	}{
		{"served from another host", "dup", queue.Process{Host: "elsewhere", PID: os.Getpid()}, true},
		{"served by a live process of this host", "dup", queue.Process{Host: host, PID: 1, Alive: func(int) bool { return true }}, true},
		{"left by a dead process of this host", "dup", queue.Process{Host: host, PID: 1, Alive: func(int) bool { return false }}, false},
		{"left by an earlier process with this PID", "dup", queue.Process{Host: host, PID: os.Getpid(), Alive: func(int) bool { return true }}, false},
		{"another worker id", "other", queue.Process{Host: "elsewhere", PID: 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := e.enq.AwaitWorkerIDFree(context.Background(), tc.id, tc.self, time.Second)
			if tc.inUse != errors.Is(err, queue.ErrWorkerIDInUse) || !tc.inUse && err != nil {
				t.Fatalf("AwaitWorkerIDFree = %v, want in use: %v", err, tc.inUse)
			}
		})
	}
}

// A worker started while Redis is away (a restart of both, a deploy during
// a Redis failover) waits for Redis within its wait instead of exiting at
// once: the check cannot tell whether another process uses the id until
// Redis answers, and a process that exits is restarted with a growing
// back-off. When Redis answers in time the check runs as usual.
func TestAwaitWorkerIDFreeWaitsForRedis(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := testenv.NewFaultProxy(t, "redis", e.redi.Addr)
	enq := queue.New(p.ProxyRedis(e.redi))
	p.Down()
	up := time.AfterFunc(2*time.Second, p.Up)
	defer up.Stop()
	if err := enq.AwaitWorkerIDFree(context.Background(), "w1", queue.Process{Host: "here", PID: 1}, 20*time.Second); err != nil {
		t.Fatalf("AwaitWorkerIDFree with Redis back after 2 s of a 20 s wait = %v, want nil", err)
	}

	p.Down()
	err := enq.AwaitWorkerIDFree(context.Background(), "w1", queue.Process{Host: "here", PID: 1}, time.Second)
	if err == nil || errors.Is(err, queue.ErrWorkerIDInUse) {
		t.Fatalf("AwaitWorkerIDFree with Redis away for the whole wait = %v, want Redis's error", err)
	}
}
