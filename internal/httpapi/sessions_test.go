package httpapi_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"wasessions/docs"
	"wasessions/internal/events"
	"wasessions/internal/httpapi"
	"wasessions/internal/qrpng"
	"wasessions/internal/store"
	"wasessions/internal/testfactory"
	"wasessions/tasks"
)

const (
	sessionPath    = "/api/integrations/whatsapp/session"
	statusPath     = "/api/integrations/whatsapp/status"
	qrPath         = "/api/integrations/whatsapp/qr"
	disconnectPath = "/api/integrations/whatsapp/disconnect"
	eventsPath     = "/api/integrations/whatsapp/events"
	statsPath      = "/api/integrations/sessions/stats"
	cleanupPath    = "/api/integrations/sessions/cleanup"
)

type sessionJSON struct {
	SessionID       string  `json:"sessionId"`
	Status          string  `json:"status"`
	StatusReason    *string `json:"statusReason"`
	DesiredState    string  `json:"desiredState"`
	IsConnected     bool    `json:"isConnected"`
	IsAuthenticated bool    `json:"isAuthenticated"`
	PhoneNumber     *string `json:"phoneNumber"`
	UserName        *string `json:"userName"`
	PairingCode     *string `json:"pairingCode"`
	QRCode          *string `json:"qrCode"`
	QRRaw           *string `json:"qrRaw"`
	ExpiresAt       *string `json:"expiresAt"`
	LastError       *string `json:"lastError"`
	LastErrorCode   *string `json:"lastErrorCode"`
}

// worker plays the worker's part for one session, through the same store
// and bus calls a worker makes.
type worker struct {
	e     *env
	id    string
	fence store.Fence
}

func (e *env) claim(t *testing.T, sessionID, workerID string) *worker {
	t.Helper()
	_, f, err := e.store.Claim(context.Background(), sessionID, workerID, time.Minute, store.ClaimToHost)
	if err != nil {
		t.Fatalf("claim %s: %v", sessionID, err)
	}
	return &worker{e: e, id: workerID, fence: f}
}

func (w *worker) publish(t *testing.T, typ string, s store.Session) {
	t.Helper()
	if err := w.e.bus.Publish(context.Background(), events.FromSession(typ, s)); err != nil {
		t.Fatal(err)
	}
}

func (w *worker) showQR(t *testing.T, raw string) store.Session {
	t.Helper()
	url, err := qrpng.DataURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	s, err := w.e.store.SetQR(context.Background(), w.fence, url, raw)
	if err != nil {
		t.Fatal(err)
	}
	w.publish(t, events.TypeQR, s)
	return s
}

func (w *worker) connect(t *testing.T, phone, name string) store.Session {
	t.Helper()
	s, err := w.e.store.MarkConnected(context.Background(), w.fence,
		store.Linked{DeviceJID: phone + ".0:1@s.whatsapp.net", Phone: phone, Name: name, Reason: "paired"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	w.publish(t, events.TypeStatus, s)
	return s
}

func TestBadInputAndEnvelopes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := e.token(newUser(), false)
	post := func(body []byte, ct string) response {
		h := map[string]string{}
		if ct != "" {
			h["Content-Type"] = ct
		}
		return e.do(req{method: "POST", path: sessionPath, token: tok, body: body, header: h})
	}
	post([]byte(`{"phoneNumber":`), "").wantError(t, 400, "invalid_json")
	post([]byte(`{not json}`), "").wantError(t, 400, "invalid_json")
	post([]byte(`{} {}`), "").wantError(t, 400, "invalid_json")
	post([]byte(`[1,2]`), "").wantError(t, 400, "invalid_request")
	post([]byte(`{"phone":"+15551234567"}`), "").wantError(t, 400, "invalid_request")
	post([]byte(`{"phoneNumber":"15551234567"}`), "").wantError(t, 400, "invalid_phone_number")
	post([]byte(`{"phoneNumber":"+0123456789"}`), "").wantError(t, 400, "invalid_phone_number")
	post([]byte(`{"phoneNumber":"+1 555 123 4567"}`), "").wantError(t, 400, "invalid_phone_number")
	post([]byte(`{"phoneNumber":""}`), "").wantError(t, 400, "invalid_phone_number")
	post([]byte(`{"phoneNumber":15551234567}`), "").wantError(t, 400, "invalid_phone_number")
	post([]byte(`phoneNumber=%2B15551234567`), "application/x-www-form-urlencoded").wantError(t, 415, "unsupported_media_type")

	// One byte over 1 MiB: 413 with the envelope, on any route.
	// Over a real connection: fasthttp refuses it from the Content-Length,
	// before routing and before reading the body.
	base := e.serve()
	e.oversized(base, sessionPath, tok).wantError(t, 413, "payload_too_large")
	e.oversized(base, disconnectPath, tok).wantError(t, 413, "payload_too_large")
	// Exactly at the limit is fine as far as size goes (it is not JSON).
	e.doHTTP(base, req{method: "POST", path: sessionPath, token: tok, body: bytes.Repeat([]byte("x"), httpapi.BodyLimit)}).wantError(t, 400, "invalid_json")

	// Unknown routes and methods: 404/405 with the envelope, token or not.
	e.do(req{method: "GET", path: "/api/integrations/whatsapp/nope", token: tok}).wantError(t, 404, "not_found")
	e.do(req{method: "GET", path: "/api/integrations/whatsapp/nope"}).wantError(t, 404, "not_found")
	e.do(req{method: "GET", path: "/nowhere"}).wantError(t, 404, "not_found")
	e.do(req{method: "DELETE", path: statusPath, token: tok}).wantError(t, 405, "method_not_allowed")

	// Probes and the contract itself.
	var health map[string]string
	e.do(req{method: "GET", path: "/healthz"}).data(t, &health)
	if health["status"] != "ok" {
		t.Fatalf("healthz: %v", health)
	}
	var ready map[string]string
	e.do(req{method: "GET", path: "/readyz"}).data(t, &ready)
	if ready["postgres"] != "ok" || ready["redis"] != "ok" {
		t.Fatalf("readyz: %v", ready)
	}
	spec := e.do(req{method: "GET", path: "/openapi.yaml"})
	if spec.Status != 200 || !bytes.Equal(spec.Body, docs.OpenAPI) {
		t.Fatalf("openapi.yaml: %d, %d bytes", spec.Status, len(spec.Body))
	}

	// Nothing created by all that bad input.
	e.do(req{method: "GET", path: statusPath, token: tok}).wantError(t, 404, "session_not_found")
	e.do(req{method: "GET", path: qrPath, token: tok}).wantError(t, 404, "session_not_found")
	e.do(req{method: "POST", path: disconnectPath, token: tok}).wantError(t, 404, "session_not_found")
}

func TestPanicIsA500WithoutDetails(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *setup) { s.nilStore = true })
	r := e.do(req{method: "GET", path: statusPath, token: e.token(newUser(), false)})
	r.wantError(t, 500, "internal_error")
	if strings.Contains(string(r.Body), "goroutine") || strings.Contains(string(r.Body), "nil pointer") {
		t.Fatalf("500 body leaks the panic: %s", r.Body)
	}
	if !strings.Contains(e.logs.String(), "panic in handler") {
		t.Fatal("the panic was not logged")
	}
}

func TestCreateWaitsForFirstQRThenStatusAndQR(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *setup) { s.opts.QRWait = 20 * time.Second })
	user := newUser()
	tok := e.token(user, false)

	// The worker: take the create task from the queue, claim, show a QR.
	workerDone := make(chan *worker, 1)
	go func() {
		var sid string
		deadline := time.Now().Add(15 * time.Second)
		for sid == "" && time.Now().Before(deadline) {
			for _, ti := range e.pendingTasks(tasks.QueueShared) {
				if ti.Type == tasks.TypeSessionCreate {
					p, err := tasks.ParseSession(taskOf(ti))
					if err == nil {
						sid = p.SessionID
					}
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		if sid == "" {
			workerDone <- nil
			return
		}
		w := e.claim(t, sid, "w1")
		w.showQR(t, "2@first-qr,abc,def")
		workerDone <- w
	}()

	r := e.do(req{method: "POST", path: sessionPath, token: tok})
	if r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var created sessionJSON
	r.data(t, &created)
	w := <-workerDone
	if w == nil {
		t.Fatal("no create task reached the queue")
	}
	if !strings.HasPrefix(created.SessionID, "whatsapp_"+user+"_") {
		t.Fatalf("sessionId = %q", created.SessionID)
	}
	if created.QRCode == nil || !strings.HasPrefix(*created.QRCode, "data:image/png;base64,") || created.Status != "qr" {
		t.Fatalf("create did not return the first QR: %+v", created)
	}

	var q struct {
		SessionID, QRCode, QRRaw, Status string
	}
	e.do(req{method: "GET", path: qrPath, token: tok}).data(t, &q)
	if q.SessionID != created.SessionID || q.QRRaw != "2@first-qr,abc,def" || q.QRCode != *created.QRCode {
		t.Fatalf("qr = %+v", q)
	}

	// Linked: status shows it, the QR is gone (409 already_linked).
	w.connect(t, "15551234567", "Alice")
	var st sessionJSON
	e.do(req{method: "GET", path: statusPath, token: tok}).data(t, &st)
	if st.Status != "connected" || !st.IsConnected || !st.IsAuthenticated || st.PhoneNumber == nil ||
		*st.PhoneNumber != "+15551234567" || st.UserName == nil || *st.UserName != "Alice" {
		t.Fatalf("status after linking: %+v", st)
	}
	e.do(req{method: "GET", path: qrPath, token: tok}).wantError(t, 409, "already_linked")

	// Creating again returns the same live session with 200.
	r = e.do(req{method: "POST", path: sessionPath, token: tok})
	var again sessionJSON
	r.data(t, &again)
	if r.Status != 200 || again.SessionID != created.SessionID {
		t.Fatalf("second create: %d %+v", r.Status, again)
	}
}

func TestQRNotReadyThenEnded(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // QRWait 0: answers at once
	user := newUser()
	tok := e.token(user, false)
	r := e.do(req{method: "POST", path: sessionPath, token: tok, body: []byte(`{}`)})
	var created sessionJSON
	r.data(t, &created)
	if r.Status != 201 || created.QRCode != nil || created.Status != "pending" {
		t.Fatalf("create: %d %+v", r.Status, created)
	}
	e.do(req{method: "GET", path: qrPath, token: tok}).wantError(t, 409, "qr_not_ready")

	w := e.claim(t, created.SessionID, "w1")
	if _, err := e.store.End(context.Background(), w.fence, store.Ending{Reason: store.ReasonQRTimeout}); err != nil {
		t.Fatal(err)
	}
	e.do(req{method: "GET", path: qrPath, token: tok}).wantError(t, 410, "session_ended")
	var st sessionJSON
	e.do(req{method: "GET", path: statusPath, token: tok}).data(t, &st)
	if st.Status != "expired" || st.StatusReason == nil || *st.StatusReason != "qr_timeout" {
		t.Fatalf("status: %+v", st)
	}
	// An ended session does not block a new one.
	r = e.do(req{method: "POST", path: sessionPath, token: tok})
	var next sessionJSON
	r.data(t, &next)
	if r.Status != 201 || next.SessionID == created.SessionID {
		t.Fatalf("create after end: %d %+v", r.Status, next)
	}
}

func TestPairByPhoneCode(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *setup) { s.opts.QRWait = 20 * time.Second })
	user := newUser()
	tok := e.token(user, false)
	go func() {
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			if s, err := e.store.LiveSession(context.Background(), user); err == nil && len(e.pendingTasks(tasks.QueueShared)) > 0 {
				if store.Str(s.PairPhone) == "" {
					return // the test fails on the response
				}
				w := e.claim(t, s.SessionID, "w1")
				s, err := e.store.SetPairingCode(context.Background(), w.fence, "ABCD-EFGH")
				if err == nil {
					w.publish(t, events.TypePairingCode, s)
				}
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	r := e.do(req{method: "POST", path: sessionPath, token: tok, body: []byte(`{"phoneNumber":"+15551234567"}`)})
	var created sessionJSON
	r.data(t, &created)
	if r.Status != 201 || created.PairingCode == nil || *created.PairingCode != "ABCD-EFGH" || created.QRCode != nil {
		t.Fatalf("create by phone: %d %+v", r.Status, created)
	}
	s, err := e.store.LiveSession(context.Background(), user)
	if err != nil || store.Str(s.PairPhone) != "+15551234567" {
		t.Fatalf("stored pair phone: %v %v", store.Str(s.PairPhone), err)
	}
	e.do(req{method: "GET", path: qrPath, token: tok}).wantError(t, 409, "pairing_code_session")
}

func TestIdempotentCreateUnderConcurrency(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *setup) { s.opts.QRWait = 200 * time.Millisecond })
	user := newUser()
	tok := e.token(user, false)
	const n = 20
	var wg sync.WaitGroup
	results := make([]response, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i] = e.do(req{method: "POST", path: sessionPath, token: tok})
		}()
	}
	close(start)
	wg.Wait()
	ids := map[string]bool{}
	codes := map[int]int{}
	for _, r := range results {
		codes[r.Status]++
		var s sessionJSON
		r.data(t, &s)
		ids[s.SessionID] = true
	}
	if len(ids) != 1 || codes[201] != 1 || codes[200] != n-1 {
		t.Fatalf("ids %v, statuses %v", ids, codes)
	}
	var rows int
	if err := e.store.Pool().QueryRow(context.Background(), `SELECT count(*) FROM whatsapp_sessions WHERE user_id = $1`, user).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Fatalf("%d rows for one user", rows)
	}
	var creates int
	for _, ti := range e.pendingTasks(tasks.QueueShared) {
		if ti.Type == tasks.TypeSessionCreate {
			creates++
		}
	}
	if creates != 1 {
		t.Fatalf("%d create tasks queued, want 1", creates)
	}
}

func TestIsolationBetweenUsers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := newUser(), newUser()
	ta, tb := e.token(a, false), e.token(b, false)
	var sa sessionJSON
	e.do(req{method: "POST", path: sessionPath, token: ta}).data(t, &sa)
	w := e.claim(t, sa.SessionID, "w1")
	w.showQR(t, "2@a-only")

	// B sees nothing of A's and cannot touch it.
	e.do(req{method: "GET", path: statusPath, token: tb}).wantError(t, 404, "session_not_found")
	e.do(req{method: "GET", path: qrPath, token: tb}).wantError(t, 404, "session_not_found")
	e.do(req{method: "POST", path: disconnectPath, token: tb}).wantError(t, 404, "session_not_found")
	var stB struct{ Total, Active, Expired int64 }
	e.do(req{method: "GET", path: statsPath, token: tb}).data(t, &stB)
	if stB.Total != 0 {
		t.Fatalf("B's stats count A's session: %+v", stB)
	}

	// B's own session is B's, and B's disconnect leaves A's alone.
	var sb sessionJSON
	e.do(req{method: "POST", path: sessionPath, token: tb}).data(t, &sb)
	if sb.SessionID == sa.SessionID || !strings.Contains(sb.SessionID, b) {
		t.Fatalf("B got %q", sb.SessionID)
	}
	if r := e.do(req{method: "POST", path: disconnectPath, token: tb}); r.Status != http.StatusAccepted {
		t.Fatalf("B's disconnect: %d %s", r.Status, r.Body)
	}
	got, err := e.store.Get(context.Background(), sa.SessionID)
	if err != nil || got.DesiredState != store.DesiredLinked || got.Status != store.StatusQR {
		t.Fatalf("A's session after B's disconnect: %+v %v", got, err)
	}
	var q struct{ QRRaw string }
	e.do(req{method: "GET", path: qrPath, token: ta}).data(t, &q)
	if q.QRRaw != "2@a-only" {
		t.Fatalf("A's QR: %+v", q)
	}
}

func TestDisconnect(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	user := newUser()
	tok := e.token(user, false)
	var s sessionJSON
	e.do(req{method: "POST", path: sessionPath, token: tok}).data(t, &s)
	w := e.claim(t, s.SessionID, "worker-7")
	w.connect(t, "4915112345678", "Bob")

	// Hosted: the disconnect goes to the owner's own queue.
	r := e.do(req{method: "POST", path: disconnectPath, token: tok})
	var d sessionJSON
	r.data(t, &d)
	if r.Status != http.StatusAccepted || d.DesiredState != "gone" || d.SessionID != s.SessionID {
		t.Fatalf("disconnect: %d %+v", r.Status, d)
	}
	countDisconnects := func(q string) int {
		n := 0
		for _, ti := range e.pendingTasks(q) {
			if ti.Type == tasks.TypeSessionDisconnect {
				n++
			}
		}
		return n
	}
	if countDisconnects(testfactory.WorkerQueue(t, "worker-7")) != 1 || countDisconnects(tasks.QueueShared) != 0 {
		t.Fatal("the disconnect task is not on the owner's queue")
	}
	// Repeated while under way: 202 again, still one task.
	if r := e.do(req{method: "POST", path: disconnectPath, token: tok}); r.Status != http.StatusAccepted {
		t.Fatalf("repeat: %d %s", r.Status, r.Body)
	}
	if countDisconnects(testfactory.WorkerQueue(t, "worker-7")) != 1 {
		t.Fatal("a repeated disconnect queued a second task")
	}
	// The worker carries it out (as its disconnect handler does).
	if _, err := e.store.End(context.Background(), w.fence, store.Ending{Reason: store.ReasonUserDisconnected, KeysDeleted: true}); err != nil {
		t.Fatal(err)
	}
	r = e.do(req{method: "POST", path: disconnectPath, token: tok})
	r.data(t, &d)
	if r.Status != http.StatusOK || d.Status != "disconnected" || d.IsConnected || d.IsAuthenticated {
		t.Fatalf("after it was carried out: %d %+v", r.Status, d)
	}
	var st sessionJSON
	e.do(req{method: "GET", path: statusPath, token: tok}).data(t, &st)
	if st.Status != "disconnected" {
		t.Fatalf("status: %+v", st)
	}

	// Not hosted (no live lease): the shared queue.
	other := newUser()
	var s2 sessionJSON
	e.do(req{method: "POST", path: sessionPath, token: e.token(other, false)}).data(t, &s2)
	if r := e.do(req{method: "POST", path: disconnectPath, token: e.token(other, false)}); r.Status != http.StatusAccepted {
		t.Fatalf("unhosted disconnect: %d %s", r.Status, r.Body)
	}
	if countDisconnects(tasks.QueueShared) != 1 {
		t.Fatal("the unhosted session's disconnect is not on the shared queue")
	}
}

func TestStatsAndCleanup(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := newUser(), newUser()
	ctx := context.Background()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := e.store.Pool().Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`INSERT INTO users (id) VALUES ($1), ($2)`, a, b)
	// A: one connected, two expired (one ended, one past expiry). B: one expired.
	exec(`INSERT INTO whatsapp_sessions (user_id, session_id, status, is_connected, is_authenticated, expires_at)
		VALUES ($1, 'whatsapp_a_1', 'connected', true, true, now() + interval '1 hour'),
		       ($1, 'whatsapp_a_2', 'expired', false, false, now() - interval '2 hours'),
		       ($1, 'whatsapp_a_3', 'disconnected', false, false, now() - interval '1 hour'),
		       ($2, 'whatsapp_b_1', 'expired', false, false, now() - interval '1 hour')`, a, b)

	type stats struct {
		Total, Active, Expired int64
		Scope                  string
	}
	var sa, sAdmin stats
	e.do(req{method: "GET", path: statsPath, token: e.token(a, false)}).data(t, &sa)
	if sa != (stats{3, 1, 2, "user"}) {
		t.Fatalf("A's stats: %+v", sa)
	}
	e.do(req{method: "GET", path: statsPath, token: e.token(a, true)}).data(t, &sAdmin)
	if sAdmin != (stats{4, 1, 3, "all"}) {
		t.Fatalf("admin stats: %+v", sAdmin)
	}

	e.do(req{method: "POST", path: cleanupPath, token: e.token(a, false)}).wantError(t, 403, "forbidden")
	var res struct {
		CleanedCount int `json:"cleanedCount"`
	}
	r := e.do(req{method: "POST", path: cleanupPath, token: e.token(b, true)})
	r.data(t, &res)
	if res.CleanedCount != 3 {
		t.Fatalf("cleanedCount = %d, want 3: %s", res.CleanedCount, r.Body)
	}
	var left []string
	rows, _ := e.store.Pool().Query(ctx, `SELECT session_id FROM whatsapp_sessions ORDER BY 1`)
	for rows.Next() {
		var s string
		rows.Scan(&s)
		left = append(left, s)
	}
	if strings.Join(left, ",") != "whatsapp_a_1" {
		t.Fatalf("left after cleanup: %v", left)
	}
}

// A session's error reaches the user as a stable code and a sentence,
// never as the raw Go error (which names resolver and server addresses):
// also for a row written before codes existed, which holds raw text.
func TestLastErrorIsACodeAndASentence(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	user := newUser()
	tok := e.token(user, false)
	var created sessionJSON
	e.do(req{method: "POST", path: sessionPath, token: tok}).data(t, &created)
	w := e.claim(t, created.SessionID, "w1")
	if _, err := e.store.End(context.Background(), w.fence, store.Ending{Reason: store.ReasonConnectFailed,
		LastError: store.ErrServerUnreachable}); err != nil {
		t.Fatal(err)
	}
	var st sessionJSON
	e.do(req{method: "GET", path: statusPath, token: tok}).data(t, &st)
	if store.Str(st.LastErrorCode) != string(store.ErrServerUnreachable) ||
		store.Str(st.LastError) != store.ErrServerUnreachable.Message() {
		t.Fatalf("lastError %q, lastErrorCode %q", store.Str(st.LastError), store.Str(st.LastErrorCode))
	}

	const raw = "dial tcp: lookup g.whatsapp.net on 10.0.0.53:53: no such host"
	if _, err := e.store.Pool().Exec(context.Background(), `UPDATE whatsapp_sessions SET last_error = $1 WHERE session_id = $2`,
		raw, created.SessionID); err != nil {
		t.Fatal(err)
	}
	r := e.do(req{method: "GET", path: statusPath, token: tok})
	r.data(t, &st)
	if strings.Contains(string(r.Body), "10.0.0.53") || store.Str(st.LastErrorCode) != string(store.ErrUnknown) ||
		store.Str(st.LastError) != store.ErrUnknown.Message() {
		t.Fatalf("a raw stored error reached the user: %s", r.Body)
	}
}

// Disconnecting a session that already failed answers "already
// disconnected", records that the user wants it gone (desiredState gone),
// and queues nothing: there is nothing left to log out.
func TestDisconnectOfFailedSessionRecordsGone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	user := newUser()
	tok := e.token(user, false)
	var created sessionJSON
	e.do(req{method: "POST", path: sessionPath, token: tok}).data(t, &created)
	w := e.claim(t, created.SessionID, "w1")
	if _, err := e.store.End(context.Background(), w.fence, store.Ending{Reason: store.ReasonPairError,
		LastError: store.ErrPairingFailed}); err != nil {
		t.Fatal(err)
	}
	r := e.do(req{method: "POST", path: disconnectPath, token: tok})
	var d sessionJSON
	r.data(t, &d)
	if r.Status != http.StatusOK || d.Status != "failed" || d.DesiredState != string(store.DesiredGone) {
		t.Fatalf("disconnect of a failed session: %d status %s desiredState %s", r.Status, d.Status, d.DesiredState)
	}
	var st sessionJSON
	e.do(req{method: "GET", path: statusPath, token: tok}).data(t, &st)
	if st.DesiredState != string(store.DesiredGone) || st.Status != "failed" {
		t.Fatalf("status after disconnect: %+v", st)
	}
	if n := len(e.pendingTasks(tasks.QueueShared)); n != 1 { // the create task only
		t.Fatalf("%d tasks on %s, want only the create", n, tasks.QueueShared)
	}
}
