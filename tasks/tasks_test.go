package tasks

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"wasessions/internal/testenv"
)

var (
	noon    = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	kolkata = time.FixedZone("IST", 5*3600+1800)
)

// The asynq defaults that every task must override (25 retries, 30m).
const (
	asynqDefaultMaxRetry = 25
	asynqDefaultTimeout  = 30 * time.Minute
)

type taskCase struct {
	name      string
	build     func() (Job, error)
	typ       string
	id        string
	queue     string
	maxRetry  int
	timeout   time.Duration
	retention time.Duration
}

func taskCases() []taskCase {
	return []taskCase{
		{"create", func() (Job, error) { return NewCreate("whatsapp_u_1", 0, "created") },
			TypeSessionCreate, "create:whatsapp_u_1:0", QueueShared, createMaxRetry, createTimeout, 0},
		{"restore", func() (Job, error) { return NewRestore("whatsapp_u_1", 7, "worker_shutdown") },
			TypeSessionRestore, "restore:whatsapp_u_1:7", QueueShared, restoreMaxRetry, restoreTimeout, 0},
		{"disconnect on the owner's queue", func() (Job, error) { return NewDisconnect("whatsapp_u_1", "user", "wa:w:w-1") },
			TypeSessionDisconnect, "disconnect:whatsapp_u_1", "wa:w:w-1", disconnectMaxRetry, disconnectTimeout, 0},
		{"disconnect on the shared queue", func() (Job, error) { return NewDisconnect("whatsapp_u_1", "user", QueueShared) },
			TypeSessionDisconnect, "disconnect:whatsapp_u_1", QueueShared, disconnectMaxRetry, disconnectTimeout, 0},
		{"restore handed to one worker", func() (Job, error) { return NewRestoreOn("whatsapp_u_1", 3, "rebalance", "wa:w:w-2") },
			TypeSessionRestore, "restore:whatsapp_u_1:3", "wa:w:w-2", restoreMaxRetry, restoreTimeout, 0},
		{"handoff on the donor's queue", func() (Job, error) { return NewHandoff("whatsapp_u_1", "w-1", "w-2") },
			TypeSessionHandoff, "handoff:whatsapp_u_1", "wa:w:w-1", handoffMaxRetry, handoffTimeout, 0},
		{"reconcile", func() (Job, error) { return NewReconcile(noon, time.Minute) },
			TypeSessionsReconcile, "reconcile:1772366400", QueueShared, reconcileMaxRetry, reconcileTimeout, 2 * time.Minute},
		{"reconcile, slot given in another zone", func() (Job, error) { return NewReconcile(noon.In(kolkata), time.Minute) },
			TypeSessionsReconcile, "reconcile:1772366400", QueueShared, reconcileMaxRetry, reconcileTimeout, 2 * time.Minute},
		{"cleanup", func() (Job, error) { return NewCleanup(noon, 2*time.Hour) },
			TypeSessionsCleanup, "cleanup:1772366400", QueueShared, cleanupMaxRetry, cleanupTimeout, 2 * time.Hour},
	}
}

func TestJobsAreDeterministic(t *testing.T) {
	for _, tc := range taskCases() {
		t.Run(tc.name, func(t *testing.T) {
			a, err := tc.build()
			if err != nil {
				t.Fatal(err)
			}
			b, err := tc.build()
			if err != nil {
				t.Fatal(err)
			}
			if a.ID != tc.id || b.ID != tc.id {
				t.Errorf("ids %q and %q, want %q", a.ID, b.ID, tc.id)
			}
			if a.Queue != tc.queue || a.Task.Type() != tc.typ {
				t.Errorf("queue %q type %q, want %q %q", a.Queue, a.Task.Type(), tc.queue, tc.typ)
			}
			if string(a.Task.Payload()) != string(b.Task.Payload()) {
				t.Errorf("payloads differ: %s vs %s", a.Task.Payload(), b.Task.Payload())
			}
		})
	}
}

func TestSlotIDsDiffer(t *testing.T) {
	a, _ := NewReconcile(noon, time.Minute)
	b, _ := NewReconcile(noon.Add(time.Minute), time.Minute)
	c, _ := NewCleanup(noon, time.Hour)
	if a.ID == b.ID {
		t.Errorf("two slots share the id %s", a.ID)
	}
	if a.ID == c.ID {
		t.Errorf("reconcile and cleanup share the id %s", a.ID)
	}
}

func TestEmptySessionIDIsRejected(t *testing.T) {
	for name, build := range map[string]func() (Job, error){
		"create":            func() (Job, error) { return NewCreate("", 0, "x") },
		"restore":           func() (Job, error) { return NewRestore("", 0, "x") },
		"disconnect":        func() (Job, error) { return NewDisconnect("", "x", QueueShared) },
		"handoff":           func() (Job, error) { return NewHandoff("", "a", "b") },
		"handoff to itself": func() (Job, error) { return NewHandoff("s", "a", "a") },
	} {
		if _, err := build(); err == nil {
			t.Errorf("%s accepted an empty session id", name)
		}
	}
}

// TestOptionsReachAsynq enqueues every kind of task on a real Redis and
// reads its options back: what asynq stores is what a worker will apply.
func TestOptionsReachAsynq(t *testing.T) {
	db := testenv.NewRedisDB(t)
	rdb := redis.NewClient(db.Options())
	defer rdb.Close()
	client := asynq.NewClientFromRedisClient(rdb)
	in := asynq.NewInspectorFromRedisClient(rdb)
	for _, tc := range taskCases() {
		t.Run(tc.name, func(t *testing.T) {
			j, err := tc.build()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := client.EnqueueContext(context.Background(), j.Task, j.Opts...); err != nil {
				if errors.Is(err, asynq.ErrTaskIDConflict) {
					// Two cases build the same task on purpose; it must
					// conflict, i.e. the id did reach asynq.
					if err := in.DeleteTask(j.Queue, j.ID); err != nil {
						t.Fatal(err)
					}
					if _, err = client.EnqueueContext(context.Background(), j.Task, j.Opts...); err != nil {
						t.Fatal(err)
					}
				} else {
					t.Fatal(err)
				}
			}
			info, err := in.GetTaskInfo(tc.queue, tc.id)
			if err != nil {
				t.Fatalf("no task %s on %s: %v", tc.id, tc.queue, err)
			}
			if info.Type != tc.typ {
				t.Errorf("type %s, want %s", info.Type, tc.typ)
			}
			if info.MaxRetry != tc.maxRetry || info.MaxRetry == asynqDefaultMaxRetry {
				t.Errorf("MaxRetry %d, want %d (and not asynq's default)", info.MaxRetry, tc.maxRetry)
			}
			if info.Timeout != tc.timeout || info.Timeout == asynqDefaultTimeout || info.Timeout <= 0 {
				t.Errorf("Timeout %s, want %s (and not asynq's default)", info.Timeout, tc.timeout)
			}
			if info.Retention != tc.retention {
				t.Errorf("Retention %s, want %s", info.Retention, tc.retention)
			}
		})
	}
}

func TestWorkerQueueRoundTrip(t *testing.T) {
	for _, id := range []string{"worker-1", "host.example_2"} {
		q, err := WorkerQueue(id)
		if err != nil {
			t.Fatalf("WorkerQueue(%q): %v", id, err)
		}
		if got, ok := WorkerIDFromQueue(q); got != id || !ok {
			t.Errorf("WorkerIDFromQueue(%q) = %q, %v; want %q", q, got, ok, id)
		}
	}
	for _, q := range []string{"wa:w:", QueueShared, "default"} {
		if got, ok := WorkerIDFromQueue(q); ok {
			t.Errorf("WorkerIDFromQueue(%q) = %q, true; want not a worker queue", q, got)
		}
	}
}

// No worker serves "wa:w:", so a task for an empty worker id must not be
// made at all.
func TestWorkerQueueEmptyID(t *testing.T) {
	if q, err := WorkerQueue(""); err == nil {
		t.Fatalf("WorkerQueue(\"\") = %q, want an error", q)
	}
}

func TestParse(t *testing.T) {
	j, _ := NewRestore("whatsapp_u_9", 1, "lease_expired")
	p, err := ParseSession(j.Task)
	if err != nil || p.SessionID != "whatsapp_u_9" || p.Reason != "lease_expired" {
		t.Errorf("ParseSession = %+v, %v", p, err)
	}
	s, _ := NewCleanup(noon.In(kolkata), time.Hour)
	sp, err := ParseSlot(s.Task)
	if err != nil || !sp.Slot.Equal(noon) {
		t.Errorf("ParseSlot = %+v, %v", sp, err)
	}

	bad := []*asynq.Task{
		asynq.NewTask(TypeSessionRestore, []byte("{")),
		asynq.NewTask(TypeSessionRestore, []byte(`{"reason":"x"}`)),
	}
	for _, task := range bad {
		if _, err := ParseSession(task); err == nil || !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("ParseSession(%s) = %v, want an error wrapping SkipRetry", task.Payload(), err)
		}
	}
	if _, err := ParseSlot(asynq.NewTask(TypeSessionsCleanup, []byte("nope"))); err == nil || !errors.Is(err, asynq.SkipRetry) {
		t.Errorf("ParseSlot(garbage) = %v, want an error wrapping SkipRetry", err)
	}
}
