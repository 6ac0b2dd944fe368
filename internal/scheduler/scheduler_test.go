package scheduler

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"

	"wasessions/internal/queue"
	"wasessions/internal/redisconn"
	"wasessions/internal/store"
	"wasessions/internal/testenv"
	"wasessions/tasks"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestReconcileSlot(t *testing.T) {
	tests := []struct {
		name     string
		now      string
		interval time.Duration
		want     string
	}{
		{"inside a minute", "2026-03-01T10:59:42.5Z", time.Minute, "2026-03-01T10:59:00Z"},
		{"on the boundary", "2026-03-01T11:00:00Z", time.Minute, "2026-03-01T11:00:00Z"},
		{"just before the boundary", "2026-03-01T10:59:59.999Z", time.Minute, "2026-03-01T10:59:00Z"},
		{"five minutes", "2026-03-01T10:59:42Z", 5 * time.Minute, "2026-03-01T10:55:00Z"},
		{"30 seconds", "2026-03-01T10:59:42Z", 30 * time.Second, "2026-03-01T10:59:30Z"},
		{"an hour, from a non-UTC zone", "2026-03-01T12:29:00+01:30", time.Hour, "2026-03-01T10:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ReconcileSlot(at(tt.now), tt.interval)
			if want := at(tt.want); !got.Equal(want) || got.Location() != time.UTC {
				t.Errorf("ReconcileSlot(%s, %s) = %s, want %s in UTC", tt.now, tt.interval, got, want)
			}
		})
	}
}

func TestCleanupSlots(t *testing.T) {
	tests := []struct {
		name string
		spec string
		// next is the firing the scheduler waited for; now is when it woke.
		next, now string
		wantSlot  string
		wantNext  string
	}{
		{"hourly, woke on time", "0 * * * *", "2026-03-01T11:00:00Z", "2026-03-01T11:00:00Z",
			"2026-03-01T11:00:00Z", "2026-03-01T12:00:00Z"},
		{"hourly, woke late: the slot is still the scheduled time", "0 * * * *", "2026-03-01T11:00:00Z", "2026-03-01T11:00:07.3Z",
			"2026-03-01T11:00:00Z", "2026-03-01T12:00:00Z"},
		{"hourly, missed three firings: only the latest", "0 * * * *", "2026-03-01T11:00:00Z", "2026-03-01T14:10:00Z",
			"2026-03-01T14:00:00Z", "2026-03-01T15:00:00Z"},
		{"every 15 minutes", "*/15 * * * *", "2026-03-01T11:15:00Z", "2026-03-01T11:29:59Z",
			"2026-03-01T11:15:00Z", "2026-03-01T11:30:00Z"},
		{"daily at 03:30 UTC", "30 3 * * *", "2026-03-01T03:30:00Z", "2026-03-02T01:00:00Z",
			"2026-03-01T03:30:00Z", "2026-03-02T03:30:00Z"},
		{"with a time zone", "CRON_TZ=Asia/Kolkata 0 9 * * *", "2026-03-01T03:30:00Z", "2026-03-01T03:30:01Z",
			"2026-03-01T03:30:00Z", "2026-03-02T03:30:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sched, err := cron.ParseStandard(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			slot, next := DueSlot(sched, at(tt.next), at(tt.now))
			if !slot.Equal(at(tt.wantSlot)) || !next.Equal(at(tt.wantNext)) {
				t.Errorf("DueSlot(%q, %s, %s) = %s, %s; want %s, %s", tt.spec, tt.next, tt.now, slot, next, tt.wantSlot, tt.wantNext)
			}
		})
	}
}

// TestFirstCleanupSlotAfterStart: the first cleanup a replica fires is the
// first cron time after its start, computed in UTC whatever the host's zone.
func TestFirstCleanupSlotAfterStart(t *testing.T) {
	tests := []struct {
		spec, now, want string
	}{
		{"0 * * * *", "2026-03-01T10:59:30Z", "2026-03-01T11:00:00Z"},
		{"0 * * * *", "2026-03-01T11:00:00Z", "2026-03-01T12:00:00Z"},
		{"0 * * * *", "2026-03-01T11:30:00+05:30", "2026-03-01T07:00:00Z"},
		{"*/10 * * * *", "2026-03-01T10:41:00Z", "2026-03-01T10:50:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.spec+" at "+tt.now, func(t *testing.T) {
			s, err := New(Config{CleanupCron: tt.spec, RestoreInterval: time.Minute}, Deps{Enqueuer: nopEnqueuer{}})
			if err != nil {
				t.Fatal(err)
			}
			if got := s.cleanup.Next(at(tt.now).UTC()); !got.Equal(at(tt.want)) {
				t.Errorf("first cleanup after %s = %s, want %s", tt.now, got, tt.want)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		deps Deps
	}{
		{"bad cron", Config{CleanupCron: "every hour", RestoreInterval: time.Minute}, Deps{Enqueuer: nopEnqueuer{}}},
		{"six fields", Config{CleanupCron: "0 0 * * * *", RestoreInterval: time.Minute}, Deps{Enqueuer: nopEnqueuer{}}},
		{"zero interval", Config{CleanupCron: "0 * * * *"}, Deps{Enqueuer: nopEnqueuer{}}},
		{"no enqueuer", Config{CleanupCron: "0 * * * *", RestoreInterval: time.Minute}, Deps{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg, tt.deps); err == nil {
				t.Error("New accepted it")
			}
		})
	}
}

type nopEnqueuer struct{}

func (nopEnqueuer) Enqueue(context.Context, tasks.Job, bool) (queue.Result, error) {
	return queue.Enqueued, nil
}

// replica is one scheduler running against Redis with its own connection,
// clock and reports, as a separate process would.
type replica struct {
	clock *fakeClock
	fires *recorder
	logs  *logRecorder
	stop  func()
}

func startReplica(t *testing.T, redisURL string, cfg Config, start time.Time, sessions Counter) *replica {
	t.Helper()
	rdb, err := redisconn.Open(redisURL, "")
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{clock: newFakeClock(start), fires: newRecorder(), logs: newLogRecorder()}
	d := Deps{
		Enqueuer: queue.New(rdb),
		Log:      slog.New(r.logs),
		Clock:    r.clock,
		OnFire:   r.fires.onFire,
	}
	if sessions != nil {
		d.Sessions = sessions
	}
	s, err := New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			rdb.Close()
		})
	}
	t.Cleanup(r.stop)
	return r
}

// queueTasks lists every task of the shared queue, in any state, by id.
func queueTasks(t *testing.T, in *asynq.Inspector) map[string]*asynq.TaskInfo {
	t.Helper()
	out := map[string]*asynq.TaskInfo{}
	for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		in.ListPendingTasks, in.ListActiveTasks, in.ListScheduledTasks,
		in.ListRetryTasks, in.ListArchivedTasks, in.ListCompletedTasks,
	} {
		infos, err := list(tasks.QueueShared, asynq.PageSize(1000))
		if err != nil {
			t.Fatalf("list tasks: %v", err)
		}
		for _, info := range infos {
			if _, dup := out[info.ID]; dup {
				t.Fatalf("task %s listed twice", info.ID)
			}
			out[info.ID] = info
		}
	}
	return out
}

func slotID(kind Kind, slot string) string {
	return string(kind) + ":" + strconv.FormatInt(at(slot).Unix(), 10)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func newInspector(t *testing.T, db testenv.RedisDB) *asynq.Inspector {
	t.Helper()
	c := redis.NewClient(db.Options())
	t.Cleanup(func() { c.Close() })
	return asynq.NewInspectorFromRedisClient(c)
}

var hourly = Config{CleanupCron: "0 * * * *", RestoreInterval: time.Minute}

// TestTwoReplicasOneTaskPerSlot: two schedulers on one Redis, whose clocks
// disagree by seconds, fire for the same slots; the queue holds exactly one
// task per slot.
func TestTwoReplicasOneTaskPerSlot(t *testing.T) {
	db := testenv.NewRedisDB(t)
	in := newInspector(t, db)

	a := startReplica(t, db.URL(), hourly, at("2026-03-01T10:59:30Z"), nil)
	b := startReplica(t, db.URL(), hourly, at("2026-03-01T10:59:37Z"), nil)

	results := map[string][]queue.Result{}
	record := func(f Fire) {
		t.Helper()
		if f.Err != nil {
			t.Fatalf("%s %s: %v", f.Kind, f.Slot, f.Err)
		}
		results[f.TaskID] = append(results[f.TaskID], f.Result)
	}
	// Start-up: both reconcile the current slot.
	record(a.fires.await(t, KindReconcile, at("2026-03-01T10:59:00Z")))
	record(b.fires.await(t, KindReconcile, at("2026-03-01T10:59:00Z")))

	// The hour turns; b's clock runs 4.2s ahead of a's.
	b.clock.Set(at("2026-03-01T11:00:04.2Z"))
	a.clock.Set(at("2026-03-01T11:00:00Z"))
	for _, r := range []*replica{a, b} {
		record(r.fires.await(t, KindReconcile, at("2026-03-01T11:00:00Z")))
		record(r.fires.await(t, KindCleanup, at("2026-03-01T11:00:00Z")))
	}

	want := []string{
		slotID(KindCleanup, "2026-03-01T11:00:00Z"),
		slotID(KindReconcile, "2026-03-01T10:59:00Z"),
		slotID(KindReconcile, "2026-03-01T11:00:00Z"),
	}
	if got := sortedKeys(results); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("task ids fired = %v, want %v", got, want)
	}
	for id, rs := range results {
		if len(rs) != 2 || (rs[0] == queue.Enqueued) == (rs[1] == queue.Enqueued) {
			t.Errorf("%s: results %v, want one enqueued and one already_queued", id, rs)
		}
	}

	got := queueTasks(t, in)
	if fmt.Sprint(sortedKeys(got)) != fmt.Sprint(want) {
		t.Fatalf("queue holds %v, want %v", sortedKeys(got), want)
	}
	for id, info := range got {
		if info.State != asynq.TaskStatePending {
			t.Errorf("%s is %s, want pending", id, info.State)
		}
	}
	if info := got[want[0]]; info.Type != tasks.TypeSessionsCleanup || info.Retention != 2*time.Hour {
		t.Errorf("cleanup task: type %s retention %s, want %s and 2h", info.Type, info.Retention, tasks.TypeSessionsCleanup)
	}
	if info := got[want[2]]; info.Type != tasks.TypeSessionsReconcile || info.Retention != 2*time.Minute {
		t.Errorf("reconcile task: type %s retention %s, want %s and 2m", info.Type, info.Retention, tasks.TypeSessionsReconcile)
	}
}

// TestCompletedSlotIsRetained: a replica that fires after the slot's task
// has already run (on a worker) finds it completed and enqueues nothing,
// so the cleanup runs once.
func TestCompletedSlotIsRetained(t *testing.T) {
	db := testenv.NewRedisDB(t)
	in := newInspector(t, db)

	a := startReplica(t, db.URL(), hourly, at("2026-03-01T11:59:40Z"), nil)
	b := startReplica(t, db.URL(), hourly, at("2026-03-01T11:59:50Z"), nil)
	for _, r := range []*replica{a, b} {
		if f := r.fires.await(t, KindReconcile, at("2026-03-01T11:59:00Z")); f.Err != nil {
			t.Fatal(f.Err)
		}
	}

	// a reaches noon first.
	a.clock.Set(at("2026-03-01T12:00:00Z"))
	for _, k := range []Kind{KindReconcile, KindCleanup} {
		if f := a.fires.await(t, k, at("2026-03-01T12:00:00Z")); f.Err != nil || f.Result != queue.Enqueued {
			t.Fatalf("a %s: %v %v, want enqueued", k, f.Result, f.Err)
		}
	}

	// A worker runs everything that is queued.
	var mu sync.Mutex
	ran := map[string]int{}
	handler := asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		mu.Lock()
		ran[id]++
		mu.Unlock()
		return nil
	})
	srvRedis := redis.NewClient(db.Options())
	defer srvRedis.Close()
	srv := asynq.NewServerFromRedisClient(srvRedis, asynq.Config{
		Queues:      map[string]int{tasks.QueueShared: 1},
		Concurrency: 2,
		LogLevel:    asynq.FatalLevel,
	})
	if err := srv.Start(handler); err != nil {
		t.Fatal(err)
	}
	cleanupID := slotID(KindCleanup, "2026-03-01T12:00:00Z")
	for deadline := time.Now().Add(30 * time.Second); ; {
		info, err := in.GetTaskInfo(tasks.QueueShared, cleanupID)
		if err != nil {
			t.Fatal(err)
		}
		if info.State == asynq.TaskStateCompleted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cleanup task was not processed; state %s", info.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	srv.Shutdown()

	// b reaches noon late, after the slot's work is done.
	b.clock.Set(at("2026-03-01T12:00:03Z"))
	for _, k := range []Kind{KindReconcile, KindCleanup} {
		f := b.fires.await(t, k, at("2026-03-01T12:00:00Z"))
		if f.Err != nil {
			t.Fatal(f.Err)
		}
		if k == KindCleanup && f.Result != queue.Retained {
			t.Errorf("b cleanup: %v, want retained", f.Result)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	if ran[cleanupID] != 1 {
		t.Errorf("cleanup ran %d times, want 1 (ran: %v)", ran[cleanupID], ran)
	}
	got := queueTasks(t, in)
	info, ok := got[cleanupID]
	if !ok || info.State != asynq.TaskStateCompleted {
		t.Fatalf("cleanup task after b fired: %+v, want the completed one", info)
	}
	for id, info := range got {
		if info.State != asynq.TaskStateCompleted && info.State != asynq.TaskStatePending {
			t.Errorf("%s is %s", id, info.State)
		}
		if info.Type == tasks.TypeSessionsCleanup && id != cleanupID {
			t.Errorf("extra cleanup task %s", id)
		}
	}
	if n := len(got); n != 3 {
		t.Errorf("queue holds %d tasks (%v), want 3: reconcile 11:59 and 12:00, cleanup 12:00", n, sortedKeys(got))
	}
}

// TestStartupReconcileAndCount: at start the scheduler enqueues the current
// reconcile slot at once and logs the start-up line "Loaded N existing sessions"
// as a structured record.
func TestStartupReconcileAndCount(t *testing.T) {
	db := testenv.NewRedisDB(t)
	in := newInspector(t, db)
	st, _ := testenv.NewStore(t)
	ctx := context.Background()
	for i := range 2 {
		user := newUUID(t)
		if _, _, err := st.CreateSession(ctx, store.NewSession{UserID: user, SessionID: fmt.Sprintf("whatsapp_%s_%d", user, i), TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}

	r := startReplica(t, db.URL(), hourly, at("2026-03-01T08:17:12Z"), st)
	f := r.fires.await(t, KindReconcile, at("2026-03-01T08:17:00Z"))
	if f.Err != nil || f.Result != queue.Enqueued {
		t.Fatalf("start-up reconcile: %v %v", f.Result, f.Err)
	}
	info, err := in.GetTaskInfo(tasks.QueueShared, slotID(KindReconcile, "2026-03-01T08:17:00Z"))
	if err != nil {
		t.Fatalf("start-up reconcile not in the queue: %v", err)
	}
	if info.Type != tasks.TypeSessionsReconcile || info.State != asynq.TaskStatePending {
		t.Errorf("start-up task: %s %s", info.Type, info.State)
	}
	p, err := tasks.ParseSlot(asynq.NewTask(info.Type, info.Payload))
	if err != nil || !p.Slot.Equal(at("2026-03-01T08:17:00Z")) {
		t.Errorf("payload slot %v (%v), want 08:17:00Z", p.Slot, err)
	}

	rec := r.logs.await(t, "Loaded N existing sessions", func(l loggedRecord) bool {
		return l.Msg == "Loaded 2 existing sessions"
	})
	if rec.Attrs["count"] != int64(2) || rec.Level != slog.LevelInfo {
		t.Errorf("record %+v, want info with count=2", rec)
	}
}

// TestCountWaitsForSchema: the scheduler starts before any api or worker
// has migrated the database; it keeps running, says (at info, not as a
// warning: nothing is wrong) that it waits for the schema, and logs the
// count once the table exists.
func TestCountWaitsForSchema(t *testing.T) {
	db := testenv.NewRedisDB(t)
	dsn := testenv.NewDatabase(t)
	pool, err := store.Connect(context.Background(), dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	start := at("2026-03-01T08:17:12Z")
	r := startReplica(t, db.URL(), hourly, start, store.New(pool))
	r.logs.await(t, "about waiting for the schema", func(l loggedRecord) bool {
		return l.Level == slog.LevelInfo && l.Msg == "scheduler: waiting for the api or a worker to create the database schema"
	})
	if f := r.fires.await(t, KindReconcile, at("2026-03-01T08:17:00Z")); f.Err != nil {
		t.Fatalf("reconcile must not wait for Postgres: %v", f.Err)
	}

	testenv.Migrate(t, pool)
	r.clock.Set(start.Add(2 * time.Second)) // past the first retry (1s)
	rec := r.logs.await(t, "Loaded 0 existing sessions", func(l loggedRecord) bool {
		return l.Msg == "Loaded 0 existing sessions"
	})
	if rec.Attrs["count"] != int64(0) {
		t.Errorf("count attribute %v", rec.Attrs["count"])
	}
	r.logs.mu.Lock()
	defer r.logs.mu.Unlock()
	for _, l := range r.logs.records {
		if l.Level >= slog.LevelWarn {
			t.Errorf("a fresh database made the scheduler log %s %q %v", l.Level, l.Msg, l.Attrs)
		}
	}
}

// TestRecoversWhenRedisIsDown: an enqueue that fails is retried until
// Redis is back, for the slot it was meant for.
func TestRecoversWhenRedisIsDown(t *testing.T) {
	rs := testenv.StartRedisServer(t)
	rs.Stop()

	start := at("2026-03-01T10:59:58Z")
	r := startReplica(t, rs.URL(), hourly, start, nil)
	slot := at("2026-03-01T10:59:00Z")
	if f := r.fires.await(t, KindReconcile, slot); f.Err == nil {
		t.Fatalf("enqueue with Redis down succeeded: %v", f.Result)
	}
	// Still down at the next boundary: the new slots fail too, and replace
	// the old one waiting for retry.
	r.clock.Set(at("2026-03-01T11:00:00Z"))
	for _, k := range []Kind{KindReconcile, KindCleanup} {
		if f := r.fires.await(t, k, at("2026-03-01T11:00:00Z")); f.Err == nil {
			t.Fatalf("%s with Redis down succeeded", k)
		}
	}

	rs.Start()
	r.clock.Set(at("2026-03-01T11:00:01.5Z")) // past the retry delay
	for _, k := range []Kind{KindReconcile, KindCleanup} {
		f := r.fires.await(t, k, at("2026-03-01T11:00:00Z"))
		if f.Err != nil || f.Result != queue.Enqueued {
			t.Fatalf("%s after Redis came back: %v %v", k, f.Result, f.Err)
		}
	}

	c := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer c.Close()
	got := queueTasks(t, asynq.NewInspectorFromRedisClient(c))
	want := []string{slotID(KindCleanup, "2026-03-01T11:00:00Z"), slotID(KindReconcile, "2026-03-01T11:00:00Z")}
	if fmt.Sprint(sortedKeys(got)) != fmt.Sprint(want) {
		t.Errorf("queue holds %v, want %v", sortedKeys(got), want)
	}
}

func newUUID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
