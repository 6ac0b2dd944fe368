package reconcile_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"wasessions/internal/events"
	"wasessions/internal/queue"
	"wasessions/internal/reconcile"
	"wasessions/internal/store"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
	"wasessions/tasks"
)

const (
	leaseTTL   = time.Hour
	sessionTTL = 24 * time.Hour
)

type env struct {
	t    *testing.T
	ctx  context.Context
	st   *store.Store
	rdb  *redis.Client
	redi testenv.RedisDB
	insp *asynq.Inspector
	deps reconcile.Deps
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, _ := testenv.NewStore(t)
	r := testenv.NewRedisDB(t)
	rdb := redis.NewClient(r.Options())
	t.Cleanup(func() { rdb.Close() })
	return &env{
		t: t, ctx: context.Background(), st: st, rdb: rdb, redi: r,
		insp: asynq.NewInspectorFromRedisClient(rdb),
		deps: reconcile.Deps{Store: st, Enqueuer: queue.New(rdb), Bus: events.NewBus(rdb), Log: slog.New(slog.DiscardHandler)},
	}
}

var seq atomic.Int64

func (e *env) create() store.Session {
	e.t.Helper()
	user := uuid.NewString()
	s, created, err := e.st.CreateSession(e.ctx, store.NewSession{UserID: user, SessionID: fmt.Sprintf("whatsapp_%s_%d", user, seq.Add(1)), TTL: sessionTTL})
	if err != nil || !created {
		e.t.Fatalf("create: %v", err)
	}
	return s
}

// hosted makes a session in a live status hosted by worker.
func (e *env) hosted(worker string, status store.Status) (store.Session, store.Fence) {
	e.t.Helper()
	s := e.create()
	_, fence, err := e.st.Claim(e.ctx, s.SessionID, worker, leaseTTL, store.ClaimToHost)
	if err != nil {
		e.t.Fatal(err)
	}
	switch status {
	case store.StatusPending:
	case store.StatusQR:
		_, err = e.st.SetQR(e.ctx, fence, "data:image/png;base64,QR", "2@raw")
	case store.StatusConnected:
		_, err = e.st.MarkConnected(e.ctx, fence, store.Linked{DeviceJID: fmt.Sprintf("%d:1@s.whatsapp.net", seq.Add(1)), Reason: "paired"}, sessionTTL)
	default:
		e.t.Fatalf("status %s", status)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return e.get(s.SessionID), fence
}

// dead makes a session whose hosting worker died: its lease lapsed.
func (e *env) dead(status store.Status) store.Session {
	e.t.Helper()
	s, _ := e.hosted("w-dead", status)
	e.exec(`UPDATE whatsapp_sessions SET lease_until = now() - interval '1 second' WHERE session_id = $1`, s.SessionID)
	return e.get(s.SessionID)
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.st.Pool().Exec(e.ctx, sql, args...); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) expire(sessionID string) {
	e.t.Helper()
	e.exec(`UPDATE whatsapp_sessions SET expires_at = now() - interval '1 second' WHERE session_id = $1`, sessionID)
}

func (e *env) get(sessionID string) store.Session {
	e.t.Helper()
	s, err := e.st.Get(e.ctx, sessionID)
	if err != nil {
		e.t.Fatalf("get %s: %v", sessionID, err)
	}
	return s
}

func (e *env) disconnect(s store.Session) {
	e.t.Helper()
	if got, err := e.st.RequestDisconnect(e.ctx, s.UserID); err != nil || len(got) != 1 {
		e.t.Fatalf("request disconnect: %v (%d)", err, len(got))
	}
}

// takeoverID is the id of the create or restore task for s at its
// current lease epoch.
func (e *env) takeoverID(prefix string, s store.Session) string {
	return tasks.TakeoverID(prefix, s.SessionID, e.get(s.SessionID).LeaseEpoch)
}

func (e *env) tasksIn(q string) map[string]string { return testfactory.TasksIn(e.t, e.insp, q) }

func (e *env) queues() []string { return testfactory.Queues(e.t, e.insp) }

// One pass closes every gap with the right task on the right queue: a new
// QR for pairing that lost its worker or its create task, a restore (no QR)
// for a linked session that lost its worker, a disconnect any worker can
// carry out for a session the user wants gone; it leaves hosted sessions
// to their workers and ends unhosted expired sessions instead of reviving
// them. A second pass (another scheduler replica, the next interval)
// enqueues nothing new.
func TestRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	createLost := e.create() // row committed, enqueue failed
	createQueued := e.create()
	j, err := tasks.NewCreate(createQueued.SessionID, 0, "created")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.deps.Enqueuer.Enqueue(e.ctx, j, false); err != nil {
		t.Fatal(err)
	}
	qrDead := e.dead(store.StatusQR)
	connectedDead := e.dead(store.StatusConnected)
	released, fReleased := e.hosted("w-old", store.StatusConnected)
	if _, err := e.st.Release(e.ctx, fReleased, "worker_shutdown", ""); err != nil {
		t.Fatal(err)
	}
	goneDead := e.dead(store.StatusConnected)
	e.disconnect(goneDead)
	goneHosted, _ := e.hosted("w-live", store.StatusConnected)
	e.disconnect(goneHosted)
	e.hosted("w-live", store.StatusConnected)
	e.hosted("w-live", store.StatusPending)
	expiredPending := e.create()
	e.expire(expiredPending.SessionID)
	expiredConnected := e.dead(store.StatusConnected)
	e.expire(expiredConnected.SessionID)
	expiredHosted, _ := e.hosted("w-live", store.StatusConnected)
	e.expire(expiredHosted.SessionID)
	_, fEnded := e.hosted("w-live", store.StatusConnected)
	if _, err := e.st.End(e.ctx, fEnded, store.Ending{Reason: store.ReasonPhoneUnlinked, KeysDeleted: true}); err != nil {
		t.Fatal(err)
	}

	subCtx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	sub, err := e.deps.Bus.Subscribe(subCtx, expiredPending.UserID)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	res, err := reconcile.Run(e.ctx, e.deps)
	if err != nil {
		t.Fatal(err)
	}
	want := reconcile.Result{Expired: 2, Creates: 2, Restores: 2, Disconnects: 1, AlreadyQueued: 1}
	if res != want {
		t.Fatalf("first run %+v, want %+v", res, want)
	}
	wantTasks := map[string]string{
		e.takeoverID("create:", createLost):     tasks.TypeSessionCreate,
		e.takeoverID("create:", createQueued):   tasks.TypeSessionCreate,
		e.takeoverID("create:", qrDead):         tasks.TypeSessionCreate,
		e.takeoverID("restore:", connectedDead): tasks.TypeSessionRestore,
		e.takeoverID("restore:", released):      tasks.TypeSessionRestore,
		"disconnect:" + goneDead.SessionID:      tasks.TypeSessionDisconnect,
	}
	if got := e.tasksIn(tasks.QueueShared); !maps.Equal(got, wantTasks) {
		t.Fatalf("wa:shared holds\n%v\nwant\n%v", got, wantTasks)
	}
	if qs := e.queues(); !slices.Equal(qs, []string{tasks.QueueShared}) {
		t.Fatalf("queues %v, want only %s", qs, tasks.QueueShared)
	}
	for id, reason := range map[string]string{expiredPending.SessionID: "qr_timeout", expiredConnected.SessionID: "session_expired"} {
		if s := e.get(id); s.Status != store.StatusExpired || store.Str(s.StatusReason) != reason {
			t.Errorf("%s: %s/%s, want expired/%s", id, s.Status, store.Str(s.StatusReason), reason)
		}
	}
	if s := e.get(expiredHosted.SessionID); s.Status != store.StatusConnected || !s.LeaseLive {
		t.Errorf("an expired session its worker still hosts was ended under it: %s live %v", s.Status, s.LeaseLive)
	}
	select {
	case ev := <-sub.C:
		if ev.SessionID != expiredPending.SessionID || ev.Status != string(store.StatusExpired) || ev.Reason != "qr_timeout" {
			t.Errorf("event %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Error("no event for the expired session")
	}

	res, err = reconcile.Run(e.ctx, e.deps)
	if err != nil {
		t.Fatal(err)
	}
	if want := (reconcile.Result{AlreadyQueued: 6}); res != want {
		t.Fatalf("second run %+v, want %+v", res, want)
	}
	if got := e.tasksIn(tasks.QueueShared); !maps.Equal(got, wantTasks) {
		t.Fatalf("after the second run wa:shared holds\n%v\nwant\n%v", got, wantTasks)
	}
}

// A worker SIGKILLed while running a session's restore task leaves that
// task "active" in wa:shared for good (asynq recovers it only after its
// own lease runs out). When the session's lease lapses, the reconciler's
// restore must be a new task, not "already queued" behind the orphan, or
// failover waits for asynq's recoverer instead of LEASE_TTL +
// RESTORE_INTERVAL (issue 9, suspicion e).
func TestReconcileRestoresPastOrphanedActiveTask(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.dead(store.StatusConnected)
	// The killed worker's handler claimed the lease (epoch N) from a
	// restore decided at the epoch before it.
	orphan, err := tasks.NewRestore(s.SessionID, s.LeaseEpoch-1, "lease_expired")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.deps.Enqueuer.Enqueue(e.ctx, orphan, false); err != nil {
		t.Fatal(err)
	}
	running := make(chan struct{})
	release := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{Concurrency: 1, Queues: map[string]int{tasks.QueueShared: 1},
		LogLevel: asynq.FatalLevel, ShutdownTimeout: time.Second})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		close(running)
		<-release // a handler that never returns: the worker is "dead"
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	t.Cleanup(func() { close(release) })
	<-running
	srv.Stop() // takes no more tasks, so the restore stays queued for the test

	res, err := reconcile.Run(e.ctx, e.deps)
	if err != nil {
		t.Fatal(err)
	}
	if res.Restores != 1 || res.AlreadyQueued != 0 {
		t.Fatalf("reconcile %+v: the restore was taken for the orphaned task", res)
	}
	if got := e.tasksIn(tasks.QueueShared); got[e.takeoverID("restore:", s)] != tasks.TypeSessionRestore {
		t.Fatalf("wa:shared holds %v, want the restore", got)
	}
}
