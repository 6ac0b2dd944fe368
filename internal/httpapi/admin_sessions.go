package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"wasessions/internal/queue"
	"wasessions/internal/store"
	"wasessions/tasks"
)

// The operators' routes (role admin): every user's sessions, one session
// with its status history, an operator's disconnect, and the live workers.
// They answer "which sessions are failing, on which worker, and why"
// without a psql session.

const (
	// defaultAdminPage is the list's page size when limit is not given.
	defaultAdminPage = 50
	// historyLimit is how many status changes the detail view shows.
	historyLimit = 50
	// maxWorkerIDLen bounds the worker filter (WORKER_ID is a hostname).
	maxWorkerIDLen = 255
)

// Lease states of adminSessionView.LeaseState.
const (
	leaseHeld   = "held"   // a worker holds a live lease: it hosts the client
	leaseLapsed = "lapsed" // a worker's lease ran out: it died or let go without release
	leaseNone   = "none"   // no worker is named
)

// adminSessionView is a session as an operator sees it: the user's view
// plus whose it is and where it runs.
type adminSessionView struct {
	sessionView
	UserID   string  `json:"userId"`
	WorkerID *string `json:"workerId"`
	// LastWorkerID is the worker that hosted the session last, kept after
	// its lease ends (workerId is cleared then): where an ended session ran.
	LastWorkerID *string    `json:"lastWorkerId"`
	LeaseState   string     `json:"leaseState"`
	LeaseUntil   *time.Time `json:"leaseUntil"`
	LeaseEpoch   int64      `json:"leaseEpoch"`
}

func adminViewOf(a store.AdminSession) adminSessionView {
	s := a.Session
	state := leaseNone
	switch {
	case s.WorkerID != nil && s.LeaseLive:
		state = leaseHeld
	case s.WorkerID != nil:
		state = leaseLapsed
	}
	return adminSessionView{
		sessionView: viewOf(s), UserID: s.UserID, WorkerID: s.WorkerID, LastWorkerID: a.LastWorkerID,
		LeaseState: state, LeaseUntil: utc(s.LeaseUntil), LeaseEpoch: s.LeaseEpoch,
	}
}

// adminListView is GET /admin/sessions' data.
type adminListView struct {
	Sessions []adminSessionView `json:"sessions"`
	// NextCursor fetches the next page; null on the last one.
	NextCursor *string `json:"nextCursor"`
}

// statusChangeView is one entry of a session's status history.
type statusChangeView struct {
	Status   string        `json:"status"`
	Reason   *store.Reason `json:"reason"`
	WorkerID *string       `json:"workerId"`
	// LastError is the sentence for people, LastErrorCode the stable code,
	// as in a session's view.
	LastError     *string          `json:"lastError"`
	LastErrorCode *store.ErrorCode `json:"lastErrorCode"`
	At            time.Time        `json:"at"`
}

// adminDetailView is GET /admin/sessions/{sessionId}'s data.
type adminDetailView struct {
	Session adminSessionView   `json:"session"`
	History []statusChangeView `json:"history"`
}

// queueView is a queue's backlog.
type queueView struct {
	Name      string  `json:"name"`
	Depth     int     `json:"depth"`
	LatencyMS float64 `json:"latencyMs"`
}

// workerView is one live worker.
type workerView struct {
	WorkerID    string    `json:"workerId"`
	Host        string    `json:"host"`
	PID         int       `json:"pid"`
	Started     time.Time `json:"started"`
	Hosted      int       `json:"hosted"`
	Capacity    *int      `json:"capacity"`
	Concurrency int       `json:"concurrency"`
	ActiveTasks int       `json:"activeTasks"`
	Queue       queueView `json:"queue"`
}

// workersView is GET /admin/workers' data: the cluster at a glance.
type workersView struct {
	Workers     []workerView `json:"workers"`
	SharedQueue queueView    `json:"sharedQueue"`
	// SessionsByStatus counts every session per status (each status
	// present, 0 when none).
	SessionsByStatus map[string]int64 `json:"sessionsByStatus"`
}

// adminFilter reads and checks the list's query parameters.
func adminFilter(c *fiber.Ctx) (store.AdminFilter, error) {
	f := store.AdminFilter{Limit: defaultAdminPage}
	if v := c.Query("status"); v != "" {
		st := store.Status(v)
		if !knownStatus(st) {
			return f, fail(http.StatusBadRequest, "invalid_status", "status must be one of pending, qr, connected, reconnecting, disconnected, logged_out, expired, failed")
		}
		f.Status = st
	}
	if v := c.Query("worker"); v != "" {
		if len(v) > maxWorkerIDLen {
			return f, fail(http.StatusBadRequest, "invalid_worker", "worker must be a worker id of at most 255 characters")
		}
		f.WorkerID = v
	}
	if v := c.Query("user"); v != "" {
		if _, err := uuid.Parse(v); err != nil {
			return f, fail(http.StatusBadRequest, "invalid_user", "user must be a user id (UUID)")
		}
		f.UserID = v
	}
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxAdminPage {
			return f, fail(http.StatusBadRequest, "invalid_limit", "limit must be an integer from 1 to "+strconv.Itoa(store.MaxAdminPage))
		}
		f.Limit = n
	}
	if v := c.Query("cursor"); v != "" {
		cur, err := store.ParseCursor(v)
		if err != nil {
			return f, fail(http.StatusBadRequest, "invalid_cursor", "cursor must be a nextCursor this API returned")
		}
		f.After = &cur
	}
	return f, nil
}

func knownStatus(st store.Status) bool {
	for _, s := range store.Statuses() {
		if s == st {
			return true
		}
	}
	return false
}

// adminSessions is GET /api/integrations/admin/sessions: one page of every
// user's sessions, newest first, filtered by status, worker and user.
func (s *server) adminSessions(c *fiber.Ctx) error {
	f, err := adminFilter(c)
	if err != nil {
		return err
	}
	ctx := s.requestContext()
	list, next, err := s.deps.Store.AdminList(ctx, f)
	if err != nil {
		return err
	}
	out := adminListView{Sessions: make([]adminSessionView, 0, len(list))}
	for _, sess := range list {
		out.Sessions = append(out.Sessions, adminViewOf(sess))
	}
	if next != nil {
		cur := next.String()
		out.NextCursor = &cur
	}
	return ok(c, http.StatusOK, out, "Sessions")
}

// adminSession reads the session named in the path, or answers 404.
func (s *server) adminSession(ctx context.Context, c *fiber.Ctx) (store.AdminSession, error) {
	id := c.Params("sessionId")
	sess, err := s.deps.Store.AdminGet(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return sess, fail(http.StatusNotFound, codeSessionNotFound, "no session with this id")
	}
	if err != nil {
		return sess, err
	}
	noteSession(c, sess.SessionID)
	return sess, nil
}

// adminSessionDetail is GET /api/integrations/admin/sessions/{sessionId}:
// the session and its latest status changes with their reasons.
func (s *server) adminSessionDetail(c *fiber.Ctx) error {
	ctx := s.requestContext()
	sess, err := s.adminSession(ctx, c)
	if err != nil {
		return err
	}
	hist, err := s.deps.Store.StatusHistory(ctx, sess.SessionID, historyLimit)
	if err != nil {
		return err
	}
	out := adminDetailView{Session: adminViewOf(sess), History: make([]statusChangeView, 0, len(hist))}
	for _, h := range hist {
		v := statusChangeView{Status: string(h.Status), Reason: h.StatusReason, WorkerID: h.WorkerID, At: h.ChangedAt.UTC()}
		if h.LastError != nil {
			code := h.LastError.Known()
			msg := code.Message()
			v.LastError, v.LastErrorCode = &msg, &code
		}
		out.History = append(out.History, v)
	}
	return ok(c, http.StatusOK, out, "Session detail")
}

// adminDisconnect is POST /api/integrations/admin/sessions/{sessionId}/
// disconnect: what the user's own disconnect does, for any one session.
// The intent is recorded first (desired state gone), then the hosting
// worker is told: 202. Repeating it while the disconnect is under way
// queues it again (deduplicated by task id): 202. A session already ended:
// 200 with its state. No such session: 404.
func (s *server) adminDisconnect(c *fiber.Ctx) error {
	ctx := s.requestContext()
	sess, err := s.adminSession(ctx, c)
	if err != nil {
		return err
	}
	changed, did, err := s.deps.Store.RequestDisconnectSession(ctx, sess.SessionID)
	if err != nil {
		return err
	}
	if did {
		// The update does not change the worker: the last one read stays.
		sess.Session = changed
	} else {
		if sess, err = s.deps.Store.AdminGet(ctx, sess.SessionID); err != nil {
			return err
		}
		if sess.DesiredState != store.DesiredGone || !(sess.Status.Live() || sess.DeviceJID != nil) {
			return ok(c, http.StatusOK, adminViewOf(sess), "The session is already disconnected")
		}
	}
	if err := s.dispatchDisconnect(ctx, sess.Session); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "admin disconnect requested", "session_id", sess.SessionID,
		"worker_id", store.Str(sess.WorkerID), "admin_user_id", identity(c).UserID)
	return ok(c, http.StatusAccepted, adminViewOf(sess), "Disconnect requested; the session is being logged out")
}

// adminWorkers is GET /api/integrations/admin/workers: each live worker
// with how many sessions it hosts (live leases, Postgres' view), its
// capacity and its queue's backlog, plus the shared queue and the session
// counts by status.
func (s *server) adminWorkers(c *fiber.Ctx) error {
	ctx := s.requestContext()
	rctx, cancel := s.redisContext(ctx)
	live, shared, err := s.deps.Enqueuer.LiveWorkers(rctx)
	cancel()
	if err != nil {
		return redisFailure(err)
	}
	hosted, err := s.deps.Store.HostedCounts(ctx)
	if err != nil {
		return err
	}
	counts, err := s.deps.Store.CountByStatus(ctx)
	if err != nil {
		return err
	}
	out := workersView{Workers: make([]workerView, 0, len(live)), SharedQueue: queueViewOf(shared),
		SessionsByStatus: make(map[string]int64, len(store.Statuses()))}
	for _, w := range live {
		v := workerView{WorkerID: w.ID, Host: w.Host, PID: w.PID, Started: w.Started.UTC(), Hosted: hosted[w.ID],
			Concurrency: w.Concurrency, ActiveTasks: w.ActiveTasks, Queue: queueViewOf(w.Queue)}
		if w.Capacity > 0 {
			capacity := w.Capacity
			v.Capacity = &capacity
		}
		out.Workers = append(out.Workers, v)
	}
	for _, st := range store.Statuses() {
		out.SessionsByStatus[string(st)] = counts[st]
	}
	return ok(c, http.StatusOK, out, "Workers")
}

func queueViewOf(q queue.QueueLoad) queueView {
	return queueView{Name: q.Name, Depth: q.Depth, LatencyMS: float64(q.Latency.Microseconds()) / 1000}
}

// dispatchDisconnect tells the worker that hosts sess (its own queue while
// its lease is live, else any worker through the shared queue) to log it
// out and end it. The intent is already durable in Postgres: a failed
// enqueue is a 503 the client may retry, and the reconciler or the
// owner's heartbeat carries it out anyway.
func (s *server) dispatchDisconnect(ctx context.Context, sess store.Session) error {
	j, err := tasks.NewDisconnect(sess.SessionID, string(store.ReasonUserDisconnected), queue.ForSession(sess))
	if err != nil {
		return err
	}
	if err := s.enqueue(ctx, j); err != nil {
		return queueUnavailable(err, "the disconnect was recorded and will be carried out, but Redis is unavailable now; retry to confirm",
			fiber.Map{"sessionId": sess.SessionID})
	}
	return nil
}
