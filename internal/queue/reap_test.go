package queue_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"wasessions/internal/queue"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
	"wasessions/tasks"
)

// The reaper tests run a worker's asynq server in a child process (this
// test binary, re-executed) so they can SIGKILL it the way a node dies.
const (
	helperAddr  = "WASESSIONS_QUEUE_HELPER_REDIS_ADDR"
	helperDB    = "WASESSIONS_QUEUE_HELPER_REDIS_DB"
	helperQueue = "WASESSIONS_QUEUE_HELPER_QUEUE"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(helperAddr); addr != "" {
		runHelperWorker(addr)
		return
	}
	os.Exit(m.Run())
}

// runHelperWorker serves one queue with a handler that never returns, until
// the process is killed.
func runHelperWorker(addr string) {
	db, _ := strconv.Atoi(os.Getenv(helperDB))
	rdb := redis.NewClient(&redis.Options{Addr: addr, DB: db})
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: 1,
		Queues:      map[string]int{os.Getenv(helperQueue): 1},
		LogLevel:    asynq.FatalLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		select {}
	})); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	select {}
}

// env is one test's Redis database with an enqueuer on it.
type env struct {
	t    *testing.T
	ctx  context.Context
	rdb  *redis.Client
	redi testenv.RedisDB
	insp *asynq.Inspector
	enq  *queue.Enqueuer
	log  *slog.Logger
}

func newEnv(t *testing.T) *env {
	t.Helper()
	r := testenv.NewRedisDB(t)
	rdb := redis.NewClient(r.Options())
	t.Cleanup(func() { rdb.Close() })
	return &env{t: t, ctx: context.Background(), rdb: rdb, redi: r, insp: asynq.NewInspectorFromRedisClient(rdb),
		enq: queue.New(rdb), log: slog.New(slog.DiscardHandler)}
}

func (e *env) enqueueDisconnect(sessionID, queue string, opts ...asynq.Option) {
	e.t.Helper()
	j, err := tasks.NewDisconnect(sessionID, "user_disconnected", queue)
	if err != nil {
		e.t.Fatal(err)
	}
	j.Opts = append(j.Opts, opts...)
	if _, err := e.enq.Enqueue(e.ctx, j, false); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) tasksIn(q string) map[string]string { return testfactory.TasksIn(e.t, e.insp, q) }

func (e *env) queues() []string { return testfactory.Queues(e.t, e.insp) }

// The queue of a worker that is gone for good is drained into wa:shared
// (its disconnects, pending or scheduled, are carried out by any worker)
// and deleted; the queue of a running worker is left alone, tasks and all.
func TestReapWorkerQueues(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	gone, alive := testfactory.WorkerQueue(t, "gone"), testfactory.WorkerQueue(t, "alive")
	e.enqueueDisconnect("s-pending", gone)
	e.enqueueDisconnect("s-scheduled", gone, asynq.ProcessIn(time.Hour))
	e.enqueueDisconnect("s-alive", alive, asynq.ProcessIn(time.Hour))
	testfactory.AsynqServer(t, e.rdb, alive)

	n, err := e.enq.ReapWorkerQueues(e.ctx, e.log)
	if err != nil || n != 1 {
		t.Fatalf("reaped %d (%v), want 1", n, err)
	}
	if qs := e.queues(); !slices.Equal(qs, []string{tasks.QueueShared, alive}) {
		t.Fatalf("queues after reaping: %v", qs)
	}
	wantShared := map[string]string{"disconnect:s-pending": tasks.TypeSessionDisconnect, "disconnect:s-scheduled": tasks.TypeSessionDisconnect}
	if got := e.tasksIn(tasks.QueueShared); !maps.Equal(got, wantShared) {
		t.Fatalf("wa:shared holds %v, want %v", got, wantShared)
	}
	if got := e.tasksIn(alive); !maps.Equal(got, map[string]string{"disconnect:s-alive": tasks.TypeSessionDisconnect}) {
		t.Fatalf("the running worker's queue holds %v", got)
	}
	if n, err := e.enq.ReapWorkerQueues(e.ctx, e.log); err != nil || n != 0 {
		t.Fatalf("second reap: %d (%v)", n, err)
	}
}

// A worker SIGKILLed in the middle of a task leaves that task "active" in
// its queue for good (asynq recovers it only on a server of that queue).
// The reaper must still move the dead worker's waiting disconnects to
// wa:shared, once, and must still reap the other dead queues.
func TestReapWorkerQueuesAfterSIGKILL(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	killed, gone := testfactory.WorkerQueue(t, "killed"), testfactory.WorkerQueue(t, "gone")
	e.enqueueDisconnect("s-inflight", killed)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperAddr+"="+e.redi.Addr, helperDB+"="+strconv.Itoa(e.redi.DB), helperQueue+"="+killed)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	testfactory.Eventually(t, "the in-flight task to be active", func() bool {
		info, err := e.insp.GetTaskInfo(killed, "disconnect:s-inflight")
		return err == nil && info.State == asynq.TaskStateActive
	})
	e.enqueueDisconnect("s-waiting", killed) // the busy worker never takes it
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	e.enqueueDisconnect("s-gone", gone)
	// The killed server's registration outlives it by its TTL (10s).
	testfactory.Eventually(t, "the killed worker's server entry to expire", func() bool { return !testfactory.Served(t, e.insp, killed) })

	log := slog.New(slog.DiscardHandler)
	n, err := e.enq.ReapWorkerQueues(e.ctx, log)
	if err != nil || n != 1 {
		t.Fatalf("reaped %d queues (%v), want 1 (%s)", n, err, gone)
	}
	wantShared := map[string]string{"disconnect:s-waiting": tasks.TypeSessionDisconnect, "disconnect:s-gone": tasks.TypeSessionDisconnect}
	if got := e.tasksIn(tasks.QueueShared); !maps.Equal(got, wantShared) {
		t.Fatalf("wa:shared holds %v, want %v", got, wantShared)
	}
	if slices.Contains(e.queues(), gone) {
		t.Fatalf("%s not reaped", gone)
	}
	if got := e.tasksIn(killed); len(got) != 0 {
		t.Fatalf("the killed worker's queue still holds waiting tasks %v", got)
	}

	// A worker carries the moved tasks out; the next reap must not move
	// them again (the killed queue cannot be deleted while its orphaned
	// task is active, so it is still there).
	for id := range wantShared {
		if err := e.insp.DeleteTask(tasks.QueueShared, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			t.Fatal(err)
		}
	}
	n, err = e.enq.ReapWorkerQueues(e.ctx, log)
	if err != nil || n != 0 {
		t.Fatalf("second reap: %d (%v)", n, err)
	}
	if got := e.tasksIn(tasks.QueueShared); len(got) != 0 {
		t.Fatalf("the second reap moved %v again", got)
	}
}

// A dead worker's backlog longer than one page of the inspector is moved
// whole, however other task types are interleaved with it.
func TestReapWorkerQueuesMovesEveryPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	gone := testfactory.WorkerQueue(t, "gone")
	want := map[string]string{}
	for i := range 1250 {
		if i%20 == 0 {
			j, err := tasks.NewRestore(fmt.Sprintf("s-other-%d", i), 0, "test")
			if err != nil {
				t.Fatal(err)
			}
			j.Opts, j.Queue = append(j.Opts, asynq.Queue(gone)), gone
			if _, err := e.enq.Enqueue(e.ctx, j, false); err != nil {
				t.Fatal(err)
			}
			continue
		}
		id := fmt.Sprintf("s-%d", i)
		e.enqueueDisconnect(id, gone)
		want["disconnect:"+id] = tasks.TypeSessionDisconnect
	}
	n, err := e.enq.ReapWorkerQueues(e.ctx, e.log)
	if err != nil || n != 1 {
		t.Fatalf("reaped %d (%v)", n, err)
	}
	got := map[string]string{}
	for page := 1; ; page++ {
		infos, err := e.insp.ListPendingTasks(tasks.QueueShared, asynq.PageSize(1000), asynq.Page(page))
		if err != nil {
			t.Fatal(err)
		}
		for _, info := range infos {
			got[info.ID] = info.Type
		}
		if len(infos) < 1000 {
			break
		}
	}
	if len(got) != len(want) || !maps.Equal(got, want) {
		t.Fatalf("moved %d disconnects to wa:shared, want %d", len(got), len(want))
	}
}
