package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"wasessions/internal/testfactory"
)

// adminSeedDefault is how many ended sessions TestAdminPage seeds beside
// the live one it links; ADMIN_SEED_SESSIONS overrides it (the first-paint
// figure in docs/BENCHMARKS.md is taken at 100,000).
const adminSeedDefault = 5000

// adminWorker is the stack's worker id (newStack).
const adminWorker = "browser-w1"

// seedEnded fills the stack's database with n ended sessions of n users,
// as a deployment that has run for a while holds them: failed, expired,
// logged out and disconnected, their last worker one of three (a third on
// the stack's own worker), created over 30 days. Ended and without a
// device, nothing restores them; the status history trigger is off while
// seeding (the list never reads it; the detail of a seeded row shows none).
func seedEnded(t *testing.T, s *stack, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	defer conn.Close(context.Background())
	start := time.Now()
	for _, q := range []string{
		`ALTER TABLE whatsapp_sessions DISABLE TRIGGER trg_whatsapp_sessions_status_history`,
		`CREATE TEMP TABLE seed AS SELECT gen_random_uuid() AS id, k FROM generate_series(1, ` + strconv.Itoa(n) + `) k`,
		`INSERT INTO users (id) SELECT id FROM seed`,
		`INSERT INTO whatsapp_sessions (user_id, session_id, status, status_reason, last_error, last_worker_id, expires_at, created_at, updated_at)
		SELECT id, 'whatsapp_' || id || '_1', st,
			CASE st WHEN 'failed' THEN 'connect_failed' WHEN 'expired' THEN 'qr_timeout'
				WHEN 'logged_out' THEN 'phone_unlinked' ELSE 'user_disconnected' END,
			CASE st WHEN 'failed' THEN 'server_unreachable' END,
			CASE k % 3 WHEN 0 THEN '` + adminWorker + `' WHEN 1 THEN 'worker-old-1' ELSE 'worker-old-2' END,
			now() + interval '1 day',
			now() - interval '1 hour' - (k % 2592000) * interval '1 second',
			now() - interval '1 hour' - (k % 2592000) * interval '1 second'
		FROM (SELECT id, k, (ARRAY['failed','expired','logged_out','disconnected'])[k % 4 + 1] AS st FROM seed) x`,
		`ALTER TABLE whatsapp_sessions ENABLE TRIGGER trg_whatsapp_sessions_status_history`,
		`ANALYZE whatsapp_sessions`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("seed: %v\n%s", err, q)
		}
	}
	t.Logf("seeded %d ended sessions in %s", n, time.Since(start).Round(time.Millisecond))
}

// adminPage is a page of the dashboard.
type adminPage struct{ *page }

func (p adminPage) open(token, query string) {
	p.t.Helper()
	p.do("open /admin", chromedp.Navigate(p.s.APIBase+"/admin"+query+"#token="+token))
}

// state is the dashboard's data-state: loading, token or ready.
func (p adminPage) state() string {
	return eval[string](p.page, `document.getElementById('app').dataset.state`)
}

// waitFor polls the JavaScript expression expr until it is true.
func (p adminPage) waitFor(what, expr string, within time.Duration) {
	p.t.Helper()
	err := testfactory.Poll(within, 50*time.Millisecond, func() (bool, string) { return eval[bool](p.page, expr), "" })
	if err != nil {
		p.shot("timeout-" + strings.ReplaceAll(what, " ", "-"))
		p.t.Fatalf("%s: %s: %v (state %q, error %q)", p.prefix, what, err, p.state(),
			eval[string](p.page, `document.getElementById('error').textContent`))
	}
}

// row is one session row of the table as shown.
type row struct {
	Session string `json:"session"`
	Status  string `json:"status"`
	Text    string `json:"text"`
}

func (p adminPage) rows() []row {
	return eval[[]row](p.page, `[...document.querySelectorAll('[data-testid=session-row]')].map(r =>
	  ({session: r.dataset.session, status: r.dataset.status, text: r.textContent}))`)
}

// rowOf waits until the table shows session id with status want.
func (p adminPage) rowOf(id, want string, within time.Duration) row {
	p.t.Helper()
	var found row
	err := testfactory.Poll(within, 50*time.Millisecond, func() (bool, string) {
		rows := p.rows()
		for _, r := range rows {
			if r.Session == id && r.Status == want {
				found = r
				return true, ""
			}
		}
		return false, fmt.Sprintf("it shows %+v", rows)
	})
	if err != nil {
		p.shot("timeout-row-" + want)
		p.t.Fatalf("%s: the table did not show %s as %s: %v", p.prefix, id, want, err)
	}
	return found
}

func (p adminPage) setValue(id, v string) {
	p.t.Helper()
	p.do("set "+id, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector('[data-testid=%q]').value = %q`, id, v)))
}

// fitsWidth fails the test when the page is wider than the viewport (a
// phone would have to scroll sideways).
func (p adminPage) fitsWidth(when string) {
	p.t.Helper()
	w := eval[[]int](p.page, `[document.documentElement.scrollWidth, window.innerWidth]`)
	if w[0] > w[1] {
		p.t.Errorf("%s: %s: the page is %d px wide in a %d px viewport", p.prefix, when, w[0], w[1])
	}
}

// apiGet gets an API path with token and decodes the envelope's data.
func (s *stack) apiGet(t *testing.T, token, path string, out any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", s.APIBase+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err == nil && out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(env.Data, out); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	return resp.StatusCode
}

// TestAdminPage drives the operators' dashboard (/admin) in Chromium at a
// phone's width against the real programs, with thousands of ended
// sessions in the table beside one the test links through the emulator:
// counts and worker load, filters by user, status and worker, paging, the
// live stream showing a session appear and connect, a session's detail
// with its status history, a disconnect with its confirmation (cancelled,
// then confirmed: the emulator loses the device), a session opened by its
// id, a plain user's token refused, and an api restart (live updates
// interrupted, resumed, and what changed meanwhile shown). It logs the first-paint figure (FIGURE admin_first_paint) and
// saves screenshots under artifacts/browser/admin/.
func TestAdminPage(t *testing.T) {
	start := time.Now()
	shots := artifactsDir(t, "admin")
	seed := adminSeedDefault
	if v := os.Getenv("ADMIN_SEED_SESSIONS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 200 {
			t.Fatalf("ADMIN_SEED_SESSIONS=%q: want a number of at least 200", v)
		}
		seed = n
	}
	s := newStack(t)
	seedEnded(t, s, seed)
	browser := newBrowser(t, s)
	operator := uuid.NewString()
	adminTok := s.Token(operator, true)
	t.Logf("stack, seed and browser ready in %s", time.Since(start).Round(time.Millisecond))

	p := adminPage{newPage(t, browser, s, "admin", shots)}
	p.open(adminTok, "")
	p.waitFor("the dashboard ready", `document.getElementById('app').dataset.state === 'ready'`, 30*time.Second)
	p.waitFor("live", `document.getElementById('live').dataset.live === 'on'`, 10*time.Second)
	if v := eval[string](p.page, `location.href`); strings.Contains(v, "token") {
		t.Errorf("the token stays in the address: %s", v)
	}
	// Counts by status: the seed's, and every status shown.
	counts := eval[map[string]string](p.page, `Object.fromEntries([...document.querySelectorAll('#counts button')].map(b =>
	  [b.dataset.status, b.querySelector('.n').textContent.replace(/\D/g, '')]))`)
	total := 0
	for _, st := range []string{"pending", "qr", "connected", "reconnecting", "disconnected", "logged_out", "expired", "failed"} {
		v, ok := counts[st]
		if !ok {
			t.Errorf("no count for %s: %v", st, counts)
		}
		n, _ := strconv.Atoi(v)
		total += n
	}
	if total != seed {
		t.Errorf("the counts add up to %d, want the %d seeded: %v", total, seed, counts)
	}
	// The worker's load.
	if got := p.visibleText("worker-load"); !strings.HasPrefix(got, "0 hosted of ") {
		t.Errorf("worker load %q, want 0 hosted of its capacity", got)
	}
	if rows := p.rows(); len(rows) != 50 {
		t.Errorf("the first page has %d rows, want 50", len(rows))
	}
	p.fitsWidth("overview")
	p.shot("1-overview")

	// Paging through every session newest first: page 2 differs, and Newer
	// comes back to the first.
	first := p.rows()
	p.click("page-older")
	p.waitFor("page 2", `document.getElementById('page-no').textContent.startsWith('Page 2')`, 10*time.Second)
	second := p.rows()
	if len(second) != 50 || second[0].Session == first[0].Session {
		t.Errorf("page 2 has %d rows starting with %s (page 1 started with %s)", len(second), second[0].Session, first[0].Session)
	}
	p.click("page-newer")
	p.waitFor("page 1", `document.getElementById('page-no').textContent.startsWith('Page 1')`, 10*time.Second)

	// Failed on this worker: by its last worker, though the lease is gone.
	p.click("count-failed")
	p.waitFor("the failed filter", `location.search === '?status=failed'`, 10*time.Second)
	p.setValue("filter-worker", adminWorker)
	p.click("filter-apply")
	p.waitFor("the worker filter", `location.search === '?status=failed&worker=`+adminWorker+`'`, 10*time.Second)
	// Only sessions that failed on this worker, by their last worker: the
	// seed puts a third of its failed sessions there.
	p.waitFor("only rows failed on "+adminWorker, `(() => {
	  const rows = [...document.querySelectorAll('[data-testid=session-row]')];
	  return rows.length > 0 && rows.every(r => r.dataset.status === 'failed' && r.textContent.includes('`+adminWorker+` (last)'));
	})()`, 10*time.Second)
	p.fitsWidth("filtered")
	p.shot("2-failed-on-worker")

	// A user links WhatsApp while the operator watches that user: the row
	// appears and turns connected through the live stream alone.
	user := uuid.NewString()
	userTok := s.Token(user, false)
	p.click("filter-clear")
	p.setValue("filter-user", user)
	p.click("filter-apply")
	p.waitVisible("empty", 10*time.Second)
	var created struct {
		SessionID string `json:"sessionId"`
	}
	if code := s.apiPost(t, userTok, "/api/integrations/whatsapp/session", &created); code != http.StatusCreated {
		t.Fatalf("create a session: %d", code)
	}
	p.rowOf(created.SessionID, "qr", 30*time.Second)
	var qr struct {
		QRRaw string `json:"qrRaw"`
	}
	testfactory.WaitFor(t, "a QR code", 30*time.Second, func() (bool, string) {
		code := s.apiGet(t, userTok, "/api/integrations/whatsapp/qr", &qr)
		return code == http.StatusOK && qr.QRRaw != "", fmt.Sprintf("GET /qr: %d", code)
	})
	const phone, name = "15550003333", "Cy"
	var linked struct {
		JID string `json:"jid"`
	}
	if _, err := s.Phone.Call("POST", "/phone/scan", map[string]string{"qr": qr.QRRaw, "phone": phone, "name": name}, &linked, http.StatusOK); err != nil {
		t.Fatalf("scan: %v", err)
	}
	r := p.rowOf(created.SessionID, "connected", 30*time.Second)
	if !strings.Contains(r.Text, "+"+phone+" ("+name+")") || !strings.Contains(r.Text, adminWorker) || !strings.Contains(r.Text, "held") {
		t.Errorf("the connected row says %q", r.Text)
	}
	p.waitFor("the worker hosting it", `document.querySelector('[data-testid=worker-load]').textContent.startsWith('1 hosted')`, 15*time.Second)
	p.waitFor("the connected count", `document.querySelector('[data-testid=count-connected] .n').textContent === '1'`, 15*time.Second)
	p.shot("3-live-connected")

	// The detail: the session and how it got there.
	p.click("open-session")
	p.waitFor("the history", `document.querySelectorAll('[data-testid=history-entry]').length >= 3`, 10*time.Second)
	hist := eval[[]string](p.page, `[...document.querySelectorAll('[data-testid=history-entry]')].map(e => e.textContent)`)
	if len(hist) < 3 || !strings.HasPrefix(hist[0], "connected paired on "+adminWorker) || !slices.ContainsFunc(hist, func(h string) bool { return strings.HasPrefix(h, "qr qr_code") }) {
		t.Errorf("history %q, want connected (paired, on %s) after qr", hist, adminWorker)
	}
	p.fitsWidth("detail")
	p.shot("4-detail")

	// Disconnect asks first; Cancel changes nothing.
	p.click("detail-disconnect")
	p.waitVisible("confirm-ok", 5*time.Second)
	if txt := p.visibleText("confirm"); !strings.Contains(txt, created.SessionID) || !strings.Contains(txt, user) || !strings.Contains(txt, "+"+phone) {
		t.Errorf("the confirmation says %q, want the session, its user and phone", txt)
	}
	p.shot("5-confirm")
	p.click("confirm-cancel")
	time.Sleep(500 * time.Millisecond)
	var st struct {
		Status       string `json:"status"`
		DesiredState string `json:"desiredState"`
	}
	if s.apiGet(t, userTok, "/api/integrations/whatsapp/status", &st); st.Status != "connected" || st.DesiredState != "linked" {
		t.Fatalf("after Cancel the session is %+v", st)
	}
	p.click("detail-disconnect")
	p.waitVisible("confirm-ok", 5*time.Second)
	p.click("confirm-ok")
	if note := p.waitVisible("detail-note", 10*time.Second); !strings.Contains(note, "Disconnect requested") {
		t.Errorf("after the disconnect the detail says %q", note)
	}
	p.waitFor("the detail's history to show the end",
		`(document.querySelector('[data-testid=history-entry]') || {}).textContent?.startsWith('disconnected user_disconnected')`, 30*time.Second)
	p.shot("6-disconnected-detail")
	p.click("detail-close")
	p.rowOf(created.SessionID, "disconnected", 10*time.Second)
	s.waitDeviceGone(t, linked.JID, "after the operator's disconnect")
	p.shot("7-disconnected")

	// Any session by its id (from a log line or a user's report): it opens.
	p.click("filter-clear")
	p.setValue("filter-user", created.SessionID)
	p.click("filter-apply")
	p.waitFor("the detail opened by session id", `document.getElementById('detail').open &&
	  document.getElementById('detail-h').textContent === 'Session `+created.SessionID+`' &&
	  document.querySelectorAll('[data-testid=history-entry]').length >= 4`, 10*time.Second)
	p.click("detail-close")

	// A plain user's token is refused with a reason, and nothing is shown.
	u := adminPage{newPage(t, browser, s, "admin-user", shots)}
	u.open(userTok, "")
	u.waitFor("the token form", `document.getElementById('app').dataset.state === 'token'`, 20*time.Second)
	if e := u.visibleText("error"); !strings.Contains(e, "role admin") {
		t.Errorf("a user's token: the page says %q", e)
	}
	if n := len(u.rows()); n != 0 {
		t.Errorf("a user's token: %d rows shown", n)
	}
	u.shot("8-not-an-operator")

	// The api restarts (a deploy): the page says live updates were
	// interrupted, reconnects by itself, and reads again what changed
	// meanwhile (here a failed session turned expired by hand in the
	// database, which announced nothing).
	failedBefore := eval[string](p.page, `document.querySelector('[data-testid=count-failed] .n').textContent`)
	s.API.Stop(20 * time.Second)
	p.waitFor("the interruption shown", `document.getElementById('live').dataset.live === 'retry'`, 20*time.Second)
	p.shot("10-interrupted")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `UPDATE whatsapp_sessions SET status = 'expired', status_reason = 'session_expired'
		WHERE id = (SELECT id FROM whatsapp_sessions WHERE status = 'failed' LIMIT 1)`); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	s.StartAPI()
	n, _ := strconv.Atoi(strings.ReplaceAll(failedBefore, ",", ""))
	want := strconv.FormatInt(int64(n-1), 10)
	p.waitFor("live again", `document.getElementById('live').dataset.live === 'on'`, 40*time.Second)
	p.waitFor("the change made while it was down", `document.querySelector('[data-testid=count-failed] .n').textContent.replace(/\D/g, '') === '`+want+`'`, 10*time.Second)

	// A desktop's width: the table as a table.
	p.do("desktop viewport", chromedp.EmulateViewport(1280, 900))
	p.click("filter-clear")
	p.waitFor("everything listed", `location.search === ''`, 10*time.Second)
	p.fitsWidth("desktop")
	p.shot("9-desktop")

	adminFirstPaint(t, s, browser, seed, shots)
	t.Logf("screenshots in %s; whole test %s", shots, time.Since(start).Round(time.Millisecond))
}

// adminFirstPaint loads the dashboard in fresh tabs and logs, from the
// browser's navigation start to the dashboard's admin-ready mark (counts,
// workers and the first page of sessions rendered, the frame after),
// FIGURE admin_first_paint.
func adminFirstPaint(t *testing.T, s *stack, browser context.Context, seed int, shots string) {
	const loads = 5
	var ds, dom, stream, list, workers []time.Duration
	for i := range loads {
		p := adminPage{newPage(t, browser, s, "admin-paint-"+strconv.Itoa(i), shots)}
		// An operator of its own each time: a stream left behind is noticed
		// by the api only at its next heartbeat, and one operator may hold
		// STREAMS_PER_USER streams.
		p.open(s.Token(uuid.NewString(), true), "")
		p.waitFor("the admin-ready mark", `performance.getEntriesByName('admin-ready').length > 0`, 30*time.Second)
		// Where the time goes: the page's own files, the stream's ready
		// event, and the two API reads (their durations).
		m := eval[map[string]float64](p.page, `(() => {
		  const nav = performance.getEntriesByType('navigation')[0];
		  const res = performance.getEntriesByType('resource');
		  const dur = (part) => { const r = res.find(e => e.name.includes(part)); return r ? r.duration : -1; };
		  return {ready: performance.getEntriesByName('admin-ready')[0].startTime, dom: nav.domContentLoadedEventEnd,
		    stream: performance.getEntriesByName('admin-stream-ready')[0].startTime,
		    list: dur('/api/integrations/admin/sessions?'), workers: dur('/api/integrations/admin/workers')};
		})()`)
		ds = append(ds, millis(m["ready"]))
		dom, stream = append(dom, millis(m["dom"])), append(stream, millis(m["stream"]))
		list, workers = append(list, millis(m["list"])), append(workers, millis(m["workers"]))
		p.do("leave the page", chromedp.Navigate("about:blank"))
	}
	t.Logf("FIGURE admin_first_paint (%d sessions, 375 px, first page of 50): %s", seed+1, summary(ds))
	t.Logf("  of which: page loaded (DOMContentLoaded) %s; stream ready %s; GET admin/sessions %s; GET admin/workers %s",
		summary(dom), summary(stream), summary(list), summary(workers))
}

// apiPost posts an empty body to an API path with token and decodes the
// envelope's data; it returns the status.
func (s *stack) apiPost(t *testing.T, token, path string, out any) int {
	t.Helper()
	req, _ := http.NewRequest("POST", s.APIBase+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err == nil && out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(env.Data, out); err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
	}
	return resp.StatusCode
}
