package reconcile_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/hibiken/asynq"

	"wasessions/internal/reconcile"
	"wasessions/internal/store"
	"wasessions/internal/testfactory"
	"wasessions/tasks"
)

// Rebalance asks the most loaded workers to hand connected sessions to the
// least loaded ones, up to MaxMoves a pass, and leaves a balanced cluster,
// pairing sessions and workers that are not running alone.
func TestRebalance(t *testing.T) {
	type load struct{ connected, pairing int }
	tests := []struct {
		name     string
		loads    map[string]load // per worker
		live     []string        // workers with a running asynq server
		maxMoves int
		want     map[string]map[string]int // donor -> receiver -> moves
	}{
		{"after a rolling deploy", map[string]load{"a": {10, 0}, "b": {0, 0}}, []string{"a", "b"}, 20,
			map[string]map[string]int{"a": {"b": 5}}},
		{"capped per pass", map[string]load{"a": {10, 0}, "b": {0, 0}}, []string{"a", "b"}, 3,
			map[string]map[string]int{"a": {"b": 3}}},
		{"three workers", map[string]load{"a": {9, 0}, "b": {0, 0}, "c": {0, 0}}, []string{"a", "b", "c"}, 20,
			map[string]map[string]int{"a": {"b": 3, "c": 3}}},
		{"balanced within one stays still", map[string]load{"a": {5, 0}, "b": {4, 0}}, []string{"a", "b"}, 20, nil},
		{"pairing sessions never move", map[string]load{"a": {2, 6}, "b": {0, 0}}, []string{"a", "b"}, 20,
			map[string]map[string]int{"a": {"b": 2}}},
		{"a worker that is not running receives nothing", map[string]load{"a": {10, 0}, "b": {0, 0}}, []string{"a"}, 20, nil},
		{"off", map[string]load{"a": {10, 0}, "b": {0, 0}}, []string{"a", "b"}, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			connected := map[string]bool{}
			for w, l := range tt.loads {
				for range l.connected {
					s, _ := e.hosted(w, store.StatusConnected)
					connected[s.SessionID] = true
				}
				for range l.pairing {
					e.hosted(w, store.StatusQR)
				}
			}
			for _, w := range tt.live {
				q := testfactory.WorkerQueue(t, w)
				// Paused: the server counts as running, but leaves the
				// handoff tasks in the queue for the test to read.
				if err := e.insp.PauseQueue(q); err != nil {
					t.Fatal(err)
				}
				testfactory.AsynqServer(t, e.rdb, q)
			}
			d := e.deps
			d.MaxMoves = tt.maxMoves
			res, err := reconcile.Run(e.ctx, d)
			if err != nil {
				t.Fatal(err)
			}

			got := map[string]map[string]int{}
			total := 0
			for w := range tt.loads {
				infos, err := e.insp.ListPendingTasks(testfactory.WorkerQueue(t, w), asynq.PageSize(1000))
				if err != nil {
					continue // no such queue: nothing enqueued there
				}
				for _, info := range infos {
					if info.Type != tasks.TypeSessionHandoff {
						t.Fatalf("unexpected %s task on %s", info.Type, w)
					}
					var p tasks.HandoffPayload
					if err := json.Unmarshal(info.Payload, &p); err != nil {
						t.Fatal(err)
					}
					if !connected[p.SessionID] {
						t.Fatalf("asked to move %s, which is not a connected session", p.SessionID)
					}
					if s := e.get(p.SessionID); store.Str(s.WorkerID) != w {
						t.Fatalf("handoff of %s queued on %s, but %s hosts it", p.SessionID, w, store.Str(s.WorkerID))
					}
					if got[w] == nil {
						got[w] = map[string]int{}
					}
					got[w][p.To]++
					total++
				}
			}
			if !equalMoves(got, tt.want) {
				t.Fatalf("moves %v, want %v", got, tt.want)
			}
			if res.Moves != total {
				t.Fatalf("Result.Moves = %d, %d tasks queued", res.Moves, total)
			}

			// The next pass (moves not yet carried out) asks for nothing new.
			res, err = reconcile.Run(e.ctx, d)
			if err != nil || res.Moves != 0 {
				t.Fatalf("second pass: %d new moves (%v)", res.Moves, err)
			}
		})
	}
}

func equalMoves(a, b map[string]map[string]int) bool {
	count := func(m map[string]map[string]int) int {
		n := 0
		for _, r := range m {
			for _, k := range r {
				n += k
			}
		}
		return n
	}
	if count(a) != count(b) {
		return false
	}
	for d, r := range b {
		for to, n := range r {
			if a[d][to] != n {
				return false
			}
		}
	}
	return true
}

// asynq keeps publishing a worker that is shutting down, with status
// "stopped", while it hands its sessions off; its count falls to zero, so
// it looks like the least loaded worker. It must never be chosen as a
// receiver: the sessions sent to it would land on a worker that takes no
// new tasks, and wait for the reconciler.
func TestRebalanceIgnoresStoppingWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for range 10 {
		e.hosted("a", store.StatusConnected)
	}
	for _, w := range []string{"a", "b"} {
		if err := e.insp.PauseQueue(testfactory.WorkerQueue(t, w)); err != nil {
			t.Fatal(err)
		}
	}
	testfactory.AsynqServer(t, e.rdb, testfactory.WorkerQueue(t, "a"))
	stopping := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{Concurrency: 1,
		Queues: map[string]int{testfactory.WorkerQueue(t, "b"): 1}, LogLevel: asynq.FatalLevel})
	if err := stopping.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil })); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stopping.Shutdown)
	stopping.Stop() // SIGTERM received: no new tasks, still listed
	testfactory.Eventually(t, "b to be listed as stopped", func() bool {
		servers, err := e.insp.Servers()
		if err != nil {
			return false
		}
		for _, s := range servers {
			if _, ok := s.Queues[testfactory.WorkerQueue(t, "b")]; ok && s.Status == "stopped" {
				return true
			}
		}
		return false
	})
	d := e.deps
	d.MaxMoves = 20
	res, err := reconcile.Run(e.ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if res.Moves != 0 {
		infos, _ := e.insp.ListPendingTasks(testfactory.WorkerQueue(t, "a"))
		t.Fatalf("%d sessions asked to move to the stopping worker (%d handoffs queued on a)", res.Moves, len(infos))
	}
}
