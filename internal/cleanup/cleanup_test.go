package cleanup_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
	"go.mau.fi/whatsmeow/proto/waAdv"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types"

	"wasessions/internal/cleanup"
	"wasessions/internal/events"
	"wasessions/internal/queue"
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
	insp *asynq.Inspector
	deps cleanup.Deps
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, _ := testenv.NewStore(t)
	rdb := redis.NewClient(testenv.NewRedisDB(t).Options())
	t.Cleanup(func() { rdb.Close() })
	return &env{
		t: t, ctx: context.Background(), st: st, rdb: rdb,
		insp: asynq.NewInspectorFromRedisClient(rdb),
		deps: cleanup.Deps{Store: st, Enqueuer: queue.New(rdb), Bus: events.NewBus(rdb), Log: slog.New(slog.DiscardHandler)},
	}
}

var seq atomic.Int64

// session makes a user with a session in the given live status, hosted by
// worker (or by a worker that died, if worker is ""), and returns it with
// the fence of its host.
func (e *env) session(worker string, status store.Status) (store.Session, store.Fence) {
	e.t.Helper()
	user := uuid.NewString()
	s, _, err := e.st.CreateSession(e.ctx, store.NewSession{UserID: user, SessionID: fmt.Sprintf("whatsapp_%s_%d", user, seq.Add(1)), TTL: sessionTTL})
	if err != nil {
		e.t.Fatal(err)
	}
	host := worker
	if host == "" {
		host = "w-dead"
	}
	_, fence, err := e.st.Claim(e.ctx, s.SessionID, host, leaseTTL, store.ClaimToHost)
	if err != nil {
		e.t.Fatal(err)
	}
	switch status {
	case store.StatusPending:
	case store.StatusConnected:
		if _, err := e.st.MarkConnected(e.ctx, fence, store.Linked{DeviceJID: e.device(), Reason: "paired"}, sessionTTL); err != nil {
			e.t.Fatal(err)
		}
	default:
		e.t.Fatalf("status %s", status)
	}
	if worker == "" {
		e.exec(`UPDATE whatsapp_sessions SET lease_until = now() - interval '1 second' WHERE session_id = $1`, s.SessionID)
	}
	return e.get(s.SessionID), fence
}

// device stores a real whatsmeow device and returns its jid.
func (e *env) device() string {
	e.t.Helper()
	c := sqlstore.NewWithDB(stdlib.OpenDBFromPool(e.st.Pool()), "postgres", nil)
	dev := c.NewDevice()
	jid := types.NewADJID(strconv.FormatInt(15550000000+seq.Add(1), 10), 0, 2)
	dev.ID = &jid
	dev.Account = &waAdv.ADVSignedDeviceIdentity{Details: []byte("d"), AccountSignature: make([]byte, 64),
		AccountSignatureKey: make([]byte, 32), DeviceSignature: make([]byte, 64)}
	if err := c.PutDevice(e.ctx, dev); err != nil {
		e.t.Fatal(err)
	}
	return jid.String()
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

func (e *env) subscribe(userID string) *events.Subscription {
	e.t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	sub, err := e.deps.Bus.Subscribe(ctx, userID)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cancel(); sub.Close() })
	return sub
}

func next(t *testing.T, sub *events.Subscription, who string) events.Event {
	t.Helper()
	select {
	case ev, ok := <-sub.C:
		if !ok {
			t.Fatalf("%s: subscription closed", who)
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no event within 10s", who)
	}
	panic("unreachable")
}

// Cleanup over a mix: expired sessions nobody hosts are expired (with an
// event) and deleted with their device keys, in batches; an expired session
// a worker still hosts is handed to that worker's own queue and kept until
// the worker lets go; sessions not yet expired are left alone.
func TestRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pending, _ := e.session("", store.StatusPending)
	connected, _ := e.session("", store.StatusConnected)
	ended, fEnded := e.session("w-1", store.StatusPending)
	if _, err := e.st.End(e.ctx, fEnded, store.Ending{Reason: store.ReasonConnectFailed}); err != nil {
		t.Fatal(err)
	}
	var more []store.Session
	for range 3 {
		s, _ := e.session("", store.StatusPending)
		more = append(more, s)
	}
	hosted, _ := e.session("w-1", store.StatusConnected)
	fresh, _ := e.session("", store.StatusConnected)
	for _, s := range append([]store.Session{pending, connected, ended, hosted}, more...) {
		e.expire(s.SessionID)
	}
	subs := map[string]*events.Subscription{}
	for _, s := range []store.Session{pending, connected, ended, hosted, fresh} {
		subs[s.SessionID] = e.subscribe(s.UserID)
	}

	res, err := cleanup.Run(e.ctx, e.deps, cleanup.Options{Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != 6 || res.HandedOff != 1 {
		t.Fatalf("result %+v, want 6 deleted, 1 handed off", res)
	}
	for _, s := range append([]store.Session{pending, connected, ended}, more...) {
		if _, err := e.st.Get(e.ctx, s.SessionID); err == nil {
			t.Errorf("expired session %s (%s) was not deleted", s.SessionID, s.Status)
		}
	}
	if ok, err := e.st.DeviceExists(e.ctx, store.Str(connected.DeviceJID)); err != nil || ok {
		t.Errorf("device keys of deleted session %s still stored (%v)", connected.SessionID, err)
	}
	h := e.get(hosted.SessionID)
	if h.DesiredState != store.DesiredGone || !h.LeaseLive || store.Str(h.WorkerID) != "w-1" {
		t.Errorf("hosted expired session: desired %s live %v worker %q", h.DesiredState, h.LeaseLive, store.Str(h.WorkerID))
	}
	if ok, err := e.st.DeviceExists(e.ctx, store.Str(hosted.DeviceJID)); err != nil || !ok {
		t.Errorf("device keys of the still-hosted session deleted (%v)", err)
	}
	if f := e.get(fresh.SessionID); f.Status != store.StatusConnected || f.DesiredState != store.DesiredLinked {
		t.Errorf("unexpired session: %s/%s", f.Status, f.DesiredState)
	}

	// The hand-off: a disconnect on the owner's queue, none on the shared one.
	info, err := e.insp.GetTaskInfo(testfactory.WorkerQueue(t, "w-1"), "disconnect:"+hosted.SessionID)
	if err != nil {
		t.Fatalf("disconnect task on the owner's queue: %v", err)
	}
	var p tasks.SessionPayload
	if err := json.Unmarshal(info.Payload, &p); err != nil || info.Type != tasks.TypeSessionDisconnect || p.SessionID != hosted.SessionID || info.State != asynq.TaskStatePending {
		t.Errorf("task %s %s %+v (%v)", info.Type, info.State, p, err)
	}
	if shared, err := e.insp.ListPendingTasks(tasks.QueueShared); err == nil && len(shared) > 0 {
		t.Errorf("%d tasks on the shared queue", len(shared))
	}

	// Events, in order, on each user's channel.
	for _, tc := range []struct {
		s       store.Session
		reasons []string
	}{
		{pending, []string{"qr_timeout", "session_deleted"}},
		{connected, []string{"session_expired", "session_deleted"}},
		{ended, []string{"session_deleted"}},
	} {
		for _, reason := range tc.reasons {
			ev := next(t, subs[tc.s.SessionID], tc.s.SessionID)
			if ev.SessionID != tc.s.SessionID || ev.UserID != tc.s.UserID || ev.Status != string(store.StatusExpired) || ev.Reason != reason {
				t.Errorf("%s: event %+v, want expired/%s", tc.s.SessionID, ev, reason)
			}
		}
	}
	// Nothing for the sessions cleanup did not end: the first event they
	// see is a marker published after the run.
	for _, s := range []store.Session{hosted, fresh} {
		if err := e.deps.Bus.Publish(e.ctx, events.Event{Type: events.TypeStatus, SessionID: "marker", UserID: s.UserID}); err != nil {
			t.Fatal(err)
		}
		if ev := next(t, subs[s.SessionID], s.SessionID); ev.SessionID != "marker" {
			t.Errorf("%s: unexpected event %+v", s.SessionID, ev)
		}
	}
}

// With WaitHosted, the run waits for the hosting worker to let go of an
// expired session (here: End from another goroutine once the disconnect
// task reached the worker's queue) and deletes it in the same run, so the
// admin endpoint's count includes it.
func TestRunWaitsForHostedRelease(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	hosted, fence := e.session("w-1", store.StatusConnected)
	e.expire(hosted.SessionID)

	released := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(time.Minute)
		for {
			if _, err := e.insp.GetTaskInfo(testfactory.WorkerQueue(t, "w-1"), "disconnect:"+hosted.SessionID); err == nil {
				break
			}
			if time.Now().After(deadline) {
				released <- fmt.Errorf("no disconnect task reached the worker")
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		_, err := e.st.End(e.ctx, fence, store.Ending{Reason: store.ReasonSessionExpired, KeysDeleted: true})
		released <- err
	}()
	res, err := cleanup.Run(e.ctx, e.deps, cleanup.Options{WaitHosted: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-released; err != nil {
		t.Fatalf("worker side: %v", err)
	}
	if res.HandedOff != 1 || res.Deleted != 1 {
		t.Fatalf("result %+v, want the released session handed off and deleted in the same run", res)
	}
	if _, err := e.st.Get(e.ctx, hosted.SessionID); err == nil {
		t.Fatal("released session not deleted")
	}
}

// The run prunes status history past its retention, in batches, and keeps
// the recent history of sessions it leaves alone.
func TestRunPrunesOldStatusHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	old, _ := e.session("", store.StatusConnected)
	if _, err := e.st.Pool().Exec(e.ctx, `UPDATE session_status_history SET changed_at = now() - interval '31 days'`); err != nil {
		t.Fatal(err)
	}
	recent, _ := e.session("", store.StatusConnected)
	before, err := e.st.StatusHistory(e.ctx, old.SessionID, 100)
	if err != nil || len(before) < 2 {
		t.Fatalf("history of the old session before the run: %d rows, %v", len(before), err)
	}

	res, err := cleanup.Run(e.ctx, e.deps, cleanup.Options{Batch: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.HistoryPruned != int64(len(before)) {
		t.Fatalf("pruned %d rows, want %d", res.HistoryPruned, len(before))
	}
	if h, _ := e.st.StatusHistory(e.ctx, old.SessionID, 100); len(h) != 0 {
		t.Fatalf("old history left: %+v", h)
	}
	if h, _ := e.st.StatusHistory(e.ctx, recent.SessionID, 100); len(h) == 0 {
		t.Fatal("recent history pruned")
	}
	if e.get(old.SessionID).Status != store.StatusConnected {
		t.Fatal("pruning history touched the session")
	}
}
