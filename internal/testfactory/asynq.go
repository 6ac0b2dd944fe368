package testfactory

import (
	"context"
	"slices"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// AsynqServer runs an asynq server for queue q whose handler accepts every
// task, until the test ends, and returns once Redis lists it (as a worker
// of that queue would be).
func AsynqServer(t testing.TB, rdb redis.UniversalClient, q string) {
	t.Helper()
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 1, Queues: map[string]int{q: 1}, LogLevel: asynq.FatalLevel})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil })); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	Eventually(t, q+" to be served", func() bool { return Served(t, insp, q) })
}

// Served reports whether a running asynq server lists queue q.
func Served(t testing.TB, insp *asynq.Inspector, q string) bool {
	t.Helper()
	servers, err := insp.Servers()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		if _, ok := s.Queues[q]; ok {
			return true
		}
	}
	return false
}

// TasksIn lists the ids and types of the pending and scheduled tasks of
// queue q (none if the queue does not exist).
func TasksIn(t testing.TB, insp *asynq.Inspector, q string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){insp.ListPendingTasks, insp.ListScheduledTasks} {
		infos, err := list(q, asynq.PageSize(1000))
		if err != nil {
			if _, qerr := insp.GetQueueInfo(q); qerr != nil {
				return out // no such queue
			}
			t.Fatalf("list %s: %v", q, err)
		}
		for _, info := range infos {
			out[info.ID] = info.Type
		}
	}
	return out
}

// Queues lists asynq's queues, sorted.
func Queues(t testing.TB, insp *asynq.Inspector) []string {
	t.Helper()
	qs, err := insp.Queues()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(qs)
	return qs
}
