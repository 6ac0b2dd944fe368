package httpapi_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"wasessions/internal/store"
	"wasessions/internal/testfactory"
	"wasessions/tasks"
)

const (
	adminSessionsPath = "/api/integrations/admin/sessions"
	adminWorkersPath  = "/api/integrations/admin/workers"
	adminEventsPath   = "/api/integrations/admin/events"
)

type adminSessionJSON struct {
	sessionJSON
	UserID       string  `json:"userId"`
	WorkerID     *string `json:"workerId"`
	LastWorkerID *string `json:"lastWorkerId"`
	LeaseState   string  `json:"leaseState"`
	LeaseUntil   *string `json:"leaseUntil"`
}

type adminListJSON struct {
	Sessions   []adminSessionJSON `json:"sessions"`
	NextCursor *string            `json:"nextCursor"`
}

type adminDetailJSON struct {
	Session adminSessionJSON `json:"session"`
	History []struct {
		Status        string  `json:"status"`
		Reason        *string `json:"reason"`
		WorkerID      *string `json:"workerId"`
		LastError     *string `json:"lastError"`
		LastErrorCode *string `json:"lastErrorCode"`
	} `json:"history"`
}

type adminWorkersJSON struct {
	Workers []struct {
		WorkerID string `json:"workerId"`
		Hosted   int    `json:"hosted"`
		Capacity *int   `json:"capacity"`
		Queue    struct {
			Name  string `json:"name"`
			Depth int    `json:"depth"`
		} `json:"queue"`
	} `json:"workers"`
	SharedQueue struct {
		Depth int `json:"depth"`
	} `json:"sharedQueue"`
	SessionsByStatus map[string]int64 `json:"sessionsByStatus"`
}

// newSession creates a session for a new user through the API.
func (e *env) newSession(t *testing.T) sessionJSON {
	t.Helper()
	var s sessionJSON
	e.do(req{method: "POST", path: sessionPath, token: e.token(newUser(), false)}).data(t, &s)
	return s
}

func TestAdminRoutesRefuseNonAdmins(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.newSession(t)
	user := e.token(newUser(), false)
	routes := []struct{ method, path string }{
		{"GET", adminSessionsPath},
		{"GET", adminSessionsPath + "/" + s.SessionID},
		{"POST", adminSessionsPath + "/" + s.SessionID + "/disconnect"},
		{"GET", adminWorkersPath},
		{"GET", adminEventsPath},
	}
	for _, r := range routes {
		e.do(req{method: r.method, path: r.path, token: user}).wantError(t, http.StatusForbidden, "forbidden")
		e.do(req{method: r.method, path: r.path}).wantError(t, http.StatusUnauthorized, "token_missing")
	}
	// Nothing happened to the session.
	var st sessionJSON
	e.do(req{method: "GET", path: adminSessionsPath + "/" + s.SessionID, token: e.token(newUser(), true)}).data(t, &struct {
		Session *sessionJSON `json:"session"`
	}{&st})
	if st.DesiredState != "linked" {
		t.Fatalf("a refused disconnect changed the session: %+v", st)
	}
}

func TestAdminListFiltersAndPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	admin := e.token(newUser(), true)
	// Five sessions of five users: two connected on w1, one on w2, two
	// pending; w2's lease lapses (its worker died).
	var all []sessionJSON
	for range 5 {
		all = append(all, e.newSession(t))
	}
	e.claim(t, all[0].SessionID, "w1").connect(t, "15550000001", "A")
	e.claim(t, all[1].SessionID, "w2").connect(t, "15550000002", "B")
	e.claim(t, all[3].SessionID, "w1").connect(t, "15550000003", "C")
	if _, err := e.store.Pool().Exec(context.Background(),
		`UPDATE whatsapp_sessions SET lease_until = now() - interval '1 second' WHERE session_id = $1`, all[1].SessionID); err != nil {
		t.Fatal(err)
	}

	list := func(query string) []adminSessionJSON {
		t.Helper()
		var out []adminSessionJSON
		cursor := ""
		for pages := 0; pages < 20; pages++ {
			q := query
			if cursor != "" {
				q += "&cursor=" + url.QueryEscape(cursor)
			}
			var page adminListJSON
			e.do(req{method: "GET", path: adminSessionsPath + "?" + q, token: admin}).data(t, &page)
			out = append(out, page.Sessions...)
			if page.NextCursor == nil {
				return out
			}
			cursor = *page.NextCursor
		}
		t.Fatal("the cursor never ends")
		return nil
	}
	ids := func(ss []adminSessionJSON) string {
		var b []string
		for _, s := range ss {
			b = append(b, s.SessionID)
		}
		return strings.Join(b, ",")
	}
	want := func(idx ...int) string {
		var b []string
		for _, i := range idx {
			b = append(b, all[i].SessionID)
		}
		return strings.Join(b, ",")
	}
	for _, tc := range []struct{ query, want string }{
		{"limit=2", want(4, 3, 2, 1, 0)},
		{"limit=200", want(4, 3, 2, 1, 0)},
		{"status=connected&limit=1", want(3, 1, 0)},
		{"status=pending", want(4, 2)},
		{"worker=w1&limit=1", want(3, 0)},
		{"worker=w2&status=connected", want(1)},
		{"status=failed", ""},
	} {
		if got := ids(list(tc.query)); got != tc.want {
			t.Errorf("%s: got %s\nwant %s", tc.query, got, tc.want)
		}
	}

	// Every user's sessions, with whose they are and where they run.
	byID := map[string]adminSessionJSON{}
	for _, s := range list("limit=5") {
		byID[s.SessionID] = s
	}
	if s := byID[all[0].SessionID]; s.LeaseState != "held" || store.Str(s.WorkerID) != "w1" || s.LeaseUntil == nil || s.UserID == "" || s.PhoneNumber == nil {
		t.Errorf("hosted session: %+v", s)
	}
	if s := byID[all[1].SessionID]; s.LeaseState != "lapsed" || store.Str(s.WorkerID) != "w2" {
		t.Errorf("lapsed session: %+v", s)
	}
	if s := byID[all[2].SessionID]; s.LeaseState != "none" || s.WorkerID != nil {
		t.Errorf("pending session: %+v", s)
	}
	one := list("user=" + byID[all[2].SessionID].UserID)
	if ids(one) != want(2) {
		t.Errorf("user filter: %s", ids(one))
	}

	for _, tc := range []struct{ query, code string }{
		{"status=bogus", "invalid_status"},
		{"limit=0", "invalid_limit"},
		{"limit=201", "invalid_limit"},
		{"limit=ten", "invalid_limit"},
		{"user=not-a-uuid", "invalid_user"},
		{"cursor=garbage", "invalid_cursor"},
		{"worker=" + strings.Repeat("w", 256), "invalid_worker"},
	} {
		e.do(req{method: "GET", path: adminSessionsPath + "?" + tc.query, token: admin}).wantError(t, http.StatusBadRequest, tc.code)
	}
}

// An ended session's lease is gone (workerId null), but the worker it
// failed on is what an operator asks about: worker=w1&status=failed lists
// the sessions that failed on w1, by their last worker, and a session
// moved from w1 to w2 is listed under w2 only.
func TestAdminListFindsEndedSessionsByTheirLastWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	admin := e.token(newUser(), true)
	ctx := context.Background()
	var all []sessionJSON
	for range 3 {
		all = append(all, e.newSession(t))
	}
	end := func(w *worker) {
		t.Helper()
		if _, err := e.store.End(ctx, w.fence, store.Ending{Reason: store.ReasonConnectFailed, LastError: store.ErrServerUnreachable}); err != nil {
			t.Fatal(err)
		}
	}
	end(e.claim(t, all[0].SessionID, "w1"))
	end(e.claim(t, all[1].SessionID, "w2"))
	moved := e.claim(t, all[2].SessionID, "w1")
	moved.connect(t, "15550000004", "D")
	if _, err := e.store.Release(ctx, moved.fence, store.ReasonRebalance, ""); err != nil {
		t.Fatal(err)
	}
	e.claim(t, all[2].SessionID, "w2")

	list := func(query string) []adminSessionJSON {
		t.Helper()
		var page adminListJSON
		e.do(req{method: "GET", path: adminSessionsPath + "?" + query, token: admin}).data(t, &page)
		return page.Sessions
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"worker=w1&status=failed", []string{all[0].SessionID}},
		{"worker=w2&status=failed", []string{all[1].SessionID}},
		{"worker=w1", []string{all[0].SessionID}},
		{"worker=w2", []string{all[2].SessionID, all[1].SessionID}},
	} {
		got := list(tc.query)
		var ids []string
		for _, s := range got {
			ids = append(ids, s.SessionID)
		}
		if strings.Join(ids, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s: got %v, want %v", tc.query, ids, tc.want)
		}
	}
	failed := list("worker=w1&status=failed")
	if len(failed) == 1 && (failed[0].WorkerID != nil || store.Str(failed[0].LastWorkerID) != "w1" || failed[0].LeaseState != "none") {
		t.Errorf("the failed session: workerId %v, lastWorkerId %v, lease %s; want null, w1, none",
			failed[0].WorkerID, store.Str(failed[0].LastWorkerID), failed[0].LeaseState)
	}
	var d adminDetailJSON
	e.do(req{method: "GET", path: adminSessionsPath + "/" + all[0].SessionID, token: admin}).data(t, &d)
	if store.Str(d.Session.LastWorkerID) != "w1" {
		t.Errorf("detail: lastWorkerId %v, want w1", d.Session.LastWorkerID)
	}
}

func TestAdminSessionDetailShowsHistoryWithReasons(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	admin := e.token(newUser(), true)
	s := e.newSession(t)
	w := e.claim(t, s.SessionID, "w1")
	w.showQR(t, "2@raw,qr")
	w.connect(t, "15550000009", "Dee")
	if _, err := e.store.MarkReconnecting(context.Background(), w.fence, store.ReasonConnectionLost, store.ErrServerUnreachable); err != nil {
		t.Fatal(err)
	}

	var d adminDetailJSON
	e.do(req{method: "GET", path: adminSessionsPath + "/" + s.SessionID, token: admin}).data(t, &d)
	if d.Session.SessionID != s.SessionID || d.Session.Status != "reconnecting" || store.Str(d.Session.LastErrorCode) != "server_unreachable" {
		t.Fatalf("session: %+v", d.Session)
	}
	var got []string
	for _, h := range d.History {
		got = append(got, h.Status+"/"+store.Str(h.Reason))
	}
	if strings.Join(got, " ") != "reconnecting/connection_lost connected/paired qr/qr_code pending/" {
		t.Fatalf("history: %v", got)
	}
	if store.Str(d.History[0].WorkerID) != "w1" || store.Str(d.History[0].LastErrorCode) != "server_unreachable" || store.Str(d.History[0].LastError) == "" {
		t.Fatalf("latest change: %+v", d.History[0])
	}

	e.do(req{method: "GET", path: adminSessionsPath + "/whatsapp_00000000-0000-0000-0000-000000000000_1", token: admin}).
		wantError(t, http.StatusNotFound, "session_not_found")
}

func TestAdminDisconnectIsTheUsersDisconnect(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	admin := e.token(newUser(), true)
	s := e.newSession(t)
	bystander := e.newSession(t)
	w := e.claim(t, s.SessionID, "worker-7")
	w.connect(t, "4915112345678", "Bob")
	path := adminSessionsPath + "/" + s.SessionID + "/disconnect"

	disconnects := func(q string) int {
		n := 0
		for _, ti := range e.pendingTasks(q) {
			if ti.Type == tasks.TypeSessionDisconnect {
				n++
			}
		}
		return n
	}
	var d adminSessionJSON
	r := e.do(req{method: "POST", path: path, token: admin})
	r.data(t, &d)
	if r.Status != http.StatusAccepted || d.DesiredState != "gone" || d.SessionID != s.SessionID {
		t.Fatalf("disconnect: %d %+v", r.Status, d)
	}
	if disconnects(testfactory.WorkerQueue(t, "worker-7")) != 1 || disconnects(tasks.QueueShared) != 0 {
		t.Fatal("the disconnect task is not on the hosting worker's queue")
	}
	// Repeated while under way: 202, still one task.
	if r := e.do(req{method: "POST", path: path, token: admin}); r.Status != http.StatusAccepted {
		t.Fatalf("repeat: %d %s", r.Status, r.Body)
	}
	if disconnects(testfactory.WorkerQueue(t, "worker-7")) != 1 {
		t.Fatal("a repeated disconnect queued a second task")
	}
	// The user sees it as their own disconnect.
	var st sessionJSON
	e.do(req{method: "GET", path: statusPath, token: e.token(d.UserID, false)}).data(t, &st)
	if st.DesiredState != "gone" {
		t.Fatalf("user's status: %+v", st)
	}
	// Carried out by the worker; then a disconnect changes nothing: 200.
	if _, err := e.store.End(context.Background(), w.fence, store.Ending{Reason: store.ReasonUserDisconnected, KeysDeleted: true}); err != nil {
		t.Fatal(err)
	}
	r = e.do(req{method: "POST", path: path, token: admin})
	r.data(t, &d)
	if r.Status != http.StatusOK || d.Status != "disconnected" {
		t.Fatalf("after it was carried out: %d %+v", r.Status, d)
	}
	var other adminDetailJSON
	e.do(req{method: "GET", path: adminSessionsPath + "/" + bystander.SessionID, token: admin}).data(t, &other)
	if other.Session.DesiredState != "linked" {
		t.Fatalf("another session was touched: %+v", other.Session)
	}
	e.do(req{method: "POST", path: adminSessionsPath + "/whatsapp_00000000-0000-0000-0000-000000000000_1/disconnect", token: admin}).
		wantError(t, http.StatusNotFound, "session_not_found")
}

func TestAdminWorkersShowsLoadCapacityAndQueues(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	admin := e.token(newUser(), true)
	a, b, c := e.newSession(t), e.newSession(t), e.newSession(t)
	e.claim(t, a.SessionID, "w1").connect(t, "15550000011", "A")
	e.claim(t, b.SessionID, "w1").connect(t, "15550000012", "B")
	_ = c // pending, its create task waits on the shared queue
	if err := e.enq.AdvertiseCapacity(context.Background(), "w1", 300); err != nil {
		t.Fatal(err)
	}
	// A worker process: an asynq server on w1's queue whose handler
	// never finishes a task (none arrives: the queue is empty).
	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{Queues: map[string]int{testfactory.WorkerQueue(t, "w1"): 1}, LogLevel: asynq.FatalLevel})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error { <-ctx.Done(); return ctx.Err() })); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()

	var got adminWorkersJSON
	testfactory.EventuallyIn(t, "the worker to be listed", 30*time.Second, func() bool {
		e.do(req{method: "GET", path: adminWorkersPath, token: admin}).data(t, &got)
		return len(got.Workers) == 1
	})
	w := got.Workers[0]
	if w.WorkerID != "w1" || w.Hosted != 2 || w.Capacity == nil || *w.Capacity != 300 || w.Queue.Name != testfactory.WorkerQueue(t, "w1") {
		t.Fatalf("worker: %+v", w)
	}
	if got.SharedQueue.Depth != 3 {
		t.Fatalf("shared queue depth %d, want the 3 creates", got.SharedQueue.Depth)
	}
	if got.SessionsByStatus["connected"] != 2 || got.SessionsByStatus["pending"] != 1 || got.SessionsByStatus["failed"] != 0 {
		t.Fatalf("sessions by status: %v", got.SessionsByStatus)
	}
}
