package queue_test

import (
	"testing"

	"wasessions/internal/queue"
	"wasessions/internal/store"
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
