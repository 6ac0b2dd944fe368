package queue

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
	"wasessions/tasks"
)

// setup puts a task with the job's id into a given state, as earlier
// deliveries would have.
type setup func(t *testing.T, e *Enqueuer, rdb redis.UniversalClient, j tasks.Job)

func enqueued(t *testing.T, e *Enqueuer, _ redis.UniversalClient, j tasks.Job) {
	t.Helper()
	if _, err := e.client.Enqueue(j.Task, j.Opts...); err != nil {
		t.Fatalf("seed task: %v", err)
	}
}

func scheduled(t *testing.T, e *Enqueuer, _ redis.UniversalClient, j tasks.Job) {
	t.Helper()
	opts := append(append([]asynq.Option{}, j.Opts...), asynq.ProcessIn(time.Hour))
	if _, err := e.client.Enqueue(j.Task, opts...); err != nil {
		t.Fatalf("seed task: %v", err)
	}
}

func archived(t *testing.T, e *Enqueuer, rdb redis.UniversalClient, j tasks.Job) {
	t.Helper()
	enqueued(t, e, rdb, j)
	if err := e.inspector.ArchiveTask(j.Queue, j.ID); err != nil {
		t.Fatalf("archive: %v", err)
	}
}

// processed runs the task on a real asynq server whose handler returns
// result, and waits until the task has reached want.
func processed(result error, want asynq.TaskState) setup {
	return func(t *testing.T, e *Enqueuer, rdb redis.UniversalClient, j tasks.Job) {
		t.Helper()
		enqueued(t, e, rdb, j)
		srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
			Queues:         map[string]int{j.Queue: 1},
			Concurrency:    1,
			LogLevel:       asynq.FatalLevel,
			RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Hour },
		})
		if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return result })); err != nil {
			t.Fatal(err)
		}
		defer srv.Shutdown()
		waitState(t, e.inspector, j, want)
	}
}

func waitState(t *testing.T, in *asynq.Inspector, j tasks.Job, want asynq.TaskState) {
	t.Helper()
	testfactory.WaitFor(t, fmt.Sprintf("task %s to reach %s", j.ID, want), 30*time.Second, func() (bool, string) {
		info, err := in.GetTaskInfo(j.Queue, j.ID)
		return err == nil && info.State == want, fmt.Sprintf("%+v, %v", info, err)
	})
}

func TestEnqueue(t *testing.T) {
	session := func(t *testing.T) tasks.Job {
		j, err := tasks.NewRestore("whatsapp_u_1", 0, "test")
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	slot := func(t *testing.T) tasks.Job {
		j, err := tasks.NewCleanup(time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC), 2*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	tests := []struct {
		name          string
		job           func(*testing.T) tasks.Job
		before        setup // nil: no task with that id yet
		keepCompleted bool
		want          Result
		// wantState is the state of the task holding the id afterwards;
		// replaced means it must be a new task (pending, never retried).
		wantState asynq.TaskState
		replaced  bool
	}{
		{name: "new task", job: session, want: Enqueued, wantState: asynq.TaskStatePending},
		{name: "pending duplicate", job: session, before: enqueued, want: AlreadyQueued, wantState: asynq.TaskStatePending},
		{name: "scheduled duplicate", job: session, before: scheduled, want: AlreadyQueued, wantState: asynq.TaskStateScheduled},
		{name: "retrying duplicate", job: session, before: processed(errors.New("fail"), asynq.TaskStateRetry),
			want: AlreadyQueued, wantState: asynq.TaskStateRetry},
		{name: "archived task is replaced", job: session, before: archived, want: Enqueued,
			wantState: asynq.TaskStatePending, replaced: true},
		{name: "task archived after its last retry is replaced", job: session,
			before: processed(fmt.Errorf("gave up: %w", asynq.SkipRetry), asynq.TaskStateArchived),
			want:   Enqueued, wantState: asynq.TaskStatePending, replaced: true},
		{name: "completed slot is retained", job: slot, before: processed(nil, asynq.TaskStateCompleted),
			keepCompleted: true, want: Retained, wantState: asynq.TaskStateCompleted},
		{name: "completed task is replaced unless kept", job: slot, before: processed(nil, asynq.TaskStateCompleted),
			keepCompleted: false, want: Enqueued, wantState: asynq.TaskStatePending, replaced: true},
		{name: "archived slot is replaced even when keeping completed", job: slot, before: archived,
			keepCompleted: true, want: Enqueued, wantState: asynq.TaskStatePending, replaced: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := testenv.NewRedisDB(t)
			rdb := redis.NewClient(db.Options())
			defer rdb.Close()
			e := New(rdb)
			j := tt.job(t)
			if tt.before != nil {
				tt.before(t, e, rdb, j)
			}

			got, err := e.Enqueue(context.Background(), j, tt.keepCompleted)
			if err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
			if got != tt.want {
				t.Errorf("Enqueue = %s, want %s", got, tt.want)
			}

			info, err := e.Inspector().GetTaskInfo(j.Queue, j.ID)
			if err != nil {
				t.Fatalf("the id holds no task afterwards: %v", err)
			}
			if info.State != tt.wantState {
				t.Errorf("task state %s, want %s", info.State, tt.wantState)
			}
			if tt.replaced && (info.Retried != 0 || info.LastErr != "" || !info.CompletedAt.IsZero()) {
				t.Errorf("task was not replaced: retried %d, last error %q, completed at %s", info.Retried, info.LastErr, info.CompletedAt)
			}
			q, err := e.Inspector().GetQueueInfo(j.Queue)
			if err != nil {
				t.Fatal(err)
			}
			if q.Size != 1 { // Size counts every state, completed included
				t.Errorf("queue holds %d tasks (%+v), want exactly 1", q.Size, q)
			}
		})
	}
}

// TestEnqueueConcurrent: many callers enqueueing the same intent at once
// produce one task, one Enqueued and the rest AlreadyQueued.
func TestEnqueueConcurrent(t *testing.T) {
	db := testenv.NewRedisDB(t)
	rdb := redis.NewClient(db.Options())
	defer rdb.Close()
	e := New(rdb)
	j, err := tasks.NewCreate("whatsapp_u_2", 0, "created")
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	results := make(chan Result, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			r, err := e.Enqueue(context.Background(), j, false)
			if err != nil {
				errs <- err
				return
			}
			results <- r
		}()
	}
	counts := map[Result]int{}
	for range n {
		select {
		case err := <-errs:
			t.Fatal(err)
		case r := <-results:
			counts[r]++
		}
	}
	if counts[Enqueued] != 1 || counts[AlreadyQueued] != n-1 {
		t.Errorf("results %v, want 1 enqueued and %d already_queued", counts, n-1)
	}
}

func TestEnqueueRedisDown(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), MaxRetries: -1})
	defer rdb.Close()
	j, err := tasks.NewCreate("whatsapp_u_3", 0, "created")
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(rdb).Enqueue(context.Background(), j, false)
	if err == nil {
		t.Fatal("Enqueue succeeded with no Redis")
	}
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		t.Errorf("error %v looks like a conflict", err)
	}
}

func TestResultString(t *testing.T) {
	for r, want := range map[Result]string{Enqueued: "enqueued", AlreadyQueued: "already_queued", Retained: "retained"} {
		if got := r.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", r, got, want)
		}
	}
}
