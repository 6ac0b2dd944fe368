package testfactory

import (
	"context"
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
