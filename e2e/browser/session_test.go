package browser

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"wasessions/internal/events"
	"wasessions/internal/testfactory"
)

// qrRefs is the emulator's number of QR codes per pairing. With fewer than
// six, whatsmeow shows each for 20 s: two give a refresh 20 s in and an
// expiry 40 s in, short enough for a test.
const qrRefs = "2"

// figures collects the measured latencies of all subtests.
type figures struct {
	mu                  sync.Mutex
	qrShown             []time.Duration // qr event received → image shown
	qrShownFromRow      []time.Duration // the event's at (the row's write) → image shown
	scanConnected       []time.Duration // scan answered → page shows connected
	connectedEventShown []time.Duration // connected event received → page shows connected
	codeConnected       []time.Duration // code entered (answered) → page shows connected
}

func (f *figures) add(dst *[]time.Duration, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	*dst = append(*dst, d)
}

// received is one event as the test's own subscription got it.
type received struct {
	ev events.Event
	at time.Time
}

// recorder keeps a user's events as they are published, with the time the
// test received each: the same Redis pub/sub the API's stream listens to.
type recorder struct {
	mu  sync.Mutex
	got []received
}

func record(t *testing.T, bus *events.Bus, userID string) *recorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	sub, err := bus.Subscribe(ctx, userID)
	if err != nil {
		t.Fatalf("subscribe to %s's events: %v", userID, err)
	}
	r := &recorder{}
	go func() {
		for ev := range sub.C {
			at := time.Now()
			r.mu.Lock()
			r.got = append(r.got, received{ev, at})
			r.mu.Unlock()
		}
	}()
	return r
}

// first is the first event that matches.
func (r *recorder) first(match func(events.Event) bool) (received, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range r.got {
		if match(g.ev) {
			return g, true
		}
	}
	return received{}, false
}

func (r *recorder) qrEvents() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []received
	for _, g := range r.got {
		if g.ev.Type == events.TypeQR {
			out = append(out, g)
		}
	}
	return out
}

// TestSessionPage drives the session page in Chromium through every state
// a user meets: linking by QR code (with a refresh) and by pairing code,
// an expired QR code, a rejected token, and a disconnect. The subtests
// share one stack and one browser and run in parallel, each as its own
// user in its own browser context.
func TestSessionPage(t *testing.T) {
	start := time.Now()
	shots := artifactsDir(t)
	s := newStack(t, "-qr-refs", qrRefs)
	opts, err := redis.ParseURL(s.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	bus := events.NewBus(rdb)
	browser := newBrowser(t, s)
	t.Logf("stack and browser ready in %s", time.Since(start).Round(time.Millisecond))

	var f figures
	t.Run("flows", func(t *testing.T) {
		t.Run("qr", func(t *testing.T) {
			t.Parallel()
			qrFlow(t, s, bus, browser, shots, &f)
		})
		t.Run("phone_code", func(t *testing.T) {
			t.Parallel()
			codeFlow(t, s, browser, shots, &f)
		})
		t.Run("expired", func(t *testing.T) {
			t.Parallel()
			expiredFlow(t, s, browser, shots)
		})
		t.Run("bad_token", func(t *testing.T) {
			t.Parallel()
			badTokenFlow(t, s, browser, shots)
		})
		t.Run("foreign_link", func(t *testing.T) {
			t.Parallel()
			foreignLinkFlow(t, s, browser, shots)
		})
		t.Run("banned", func(t *testing.T) {
			t.Parallel()
			bannedFlow(t, s, browser, shots)
		})
	})

	// Sequential: it restarts the api, which every page listens to.
	t.Run("stream_reconnect", func(t *testing.T) {
		reconnectFlow(t, s, browser, shots)
	})

	for _, l := range []struct {
		name string
		ds   []time.Duration
	}{
		{"qr_event_to_image_shown", f.qrShown},
		{"qr_row_written_to_image_shown", f.qrShownFromRow},
		{"scan_to_connected_shown", f.scanConnected},
		{"connected_event_to_connected_shown", f.connectedEventShown},
		{"pairing_code_to_connected_shown", f.codeConnected},
	} {
		t.Logf("FIGURE %s: %s", l.name, summary(l.ds))
	}
	t.Logf("screenshots in %s; whole test %s", shots, time.Since(start).Round(time.Millisecond))
}

// summary lists the durations and their median (of the middle two for an
// even count).
func summary(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no samples"
	}
	sorted := slices.Clone(ds)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = ms(d)
	}
	n := len(sorted)
	median := (sorted[(n-1)/2] + sorted[n/2]) / 2
	return "samples [" + strings.Join(parts, ", ") + "], median " + ms(median)
}

func ms(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }

// qrFlow: open with a token → Connect WhatsApp → QR → refreshed QR → scan
// it → connected → socket dropped: reconnecting → connected → disconnect →
// disconnected, and the phone no longer lists the device.
func qrFlow(t *testing.T, s *stack, bus *events.Bus, browser context.Context, shots string, f *figures) {
	user := uuid.NewString()
	rec := record(t, bus, user)
	p := newPage(t, browser, s, "qr", shots)
	token := s.Token(user, false)
	p.open(token)

	v := p.waitState("none", 20*time.Second)
	if v.Hash != "" || strings.Contains(v.URL, token) {
		t.Errorf("the token is still in the address bar: %s", v.URL)
	}
	if got := eval[string](p, `sessionStorage.getItem('wasessions.token') || ''`); got != token {
		t.Errorf("sessionStorage holds %.20q…, want the token", got)
	}
	if got := p.visibleText("connect"); got != "Connect WhatsApp" {
		t.Errorf("the connect button says %q", got)
	}
	p.shot("1-start")

	p.click("connect")
	p.waitState("qr", 30*time.Second)
	first := p.imgSrc()
	if !strings.HasPrefix(first, "data:image/png;base64,") {
		t.Fatalf("the QR image's src is %.40q, want a PNG data URL", first)
	}
	if alt := eval[string](p, `document.getElementById('qr').alt`); alt == "" {
		t.Error("the QR image has no alt text")
	}
	if how := p.visibleText("status"); how != "Scan this QR code with WhatsApp" {
		t.Errorf("status %q", how)
	}
	p.shot("2-qr")

	// The next QR code replaces the image by itself (20 s on).
	testfactory.WaitFor(t, "the QR image to be replaced", 35*time.Second, func() (bool, string) {
		return p.imgSrc() != first, "the page shows " + p.viewNow().String()
	})
	p.waitState("qr", time.Second)
	p.shot("3-qr-refreshed")

	// A camera gets a few looks; a page whose QR never reads fails.
	var raw string
	var err error
	for try := 0; try < 3; try++ {
		if raw, err = p.scanQR(); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		p.shot("unreadable-qr")
		t.Fatalf("read the QR code off the page: %v", err)
	}
	if known := eval[string](p, `document.getElementById('qr').dataset.qr`); known != raw {
		t.Errorf("the image reads %.30q…, but the page's data-qr is %.30q…", raw, known)
	}
	// The page shows the second QR published. The test's own subscription
	// may hear of it a moment after the page under load.
	var qrs []received
	testfactory.WaitFor(t, "the QR the page shows ("+raw+") to be the latest published", 10*time.Second, func() (bool, string) {
		qrs = rec.qrEvents()
		var got []string
		for _, q := range qrs {
			got = append(got, q.ev.QRRaw)
		}
		n := len(qrs)
		return n >= 2 && qrs[n-1].ev.QRRaw == raw, fmt.Sprintf("published: %q", got)
	})
	// Each published QR was shown, in order, once its event arrived.
	shown := p.shownQRs()
	for i, q := range qrs {
		j := slices.IndexFunc(shown, func(s shownQR) bool { return s.Src == q.ev.QRCode })
		if j < 0 {
			t.Errorf("published QR #%d was never shown", i+1)
			continue
		}
		d := millis(shown[j].Shown - unixMilli(q.at))
		fromRow := millis(shown[j].Shown - unixMilli(q.ev.At))
		f.add(&f.qrShown, d)
		f.add(&f.qrShownFromRow, fromRow)
		t.Logf("QR #%d: published → shown %s (src set after %s); row written → shown %s",
			i+1, ms(d), ms(millis(shown[j].Set-unixMilli(q.at))), ms(fromRow))
	}

	const phone, name = "15550001111", "Ann"
	scanStart := time.Now()
	var linked struct {
		JID string `json:"jid"`
	}
	if _, err := s.Phone.Call("POST", "/phone/scan", map[string]string{"qr": raw, "phone": phone, "name": name}, &linked, http.StatusOK); err != nil {
		t.Fatalf("scan: %v", err)
	}
	scanned := time.Now()
	v = p.waitState("connected", 30*time.Second)
	if want := "Connected as +" + phone + " (" + name + ")"; v.Status != want {
		t.Errorf("the page says %q, want %q", v.Status, want)
	}
	if c, ok := firstState(p.states(), "connected", unixMilli(scanStart)); ok {
		d := millis(c.T - unixMilli(scanned))
		f.add(&f.scanConnected, d)
		t.Logf("scan answered after %s; page connected %s after that", ms(scanned.Sub(scanStart)), ms(d))
		// Where that time goes: the worker's login, or the way to the page.
		if ev, ok := rec.first(func(e events.Event) bool {
			return e.Type == events.TypeStatus && e.Status == "connected"
		}); ok {
			toPage := millis(c.T - unixMilli(ev.at))
			f.add(&f.connectedEventShown, toPage)
			t.Logf("connected event published %s after the scan answered; shown %s after that",
				ms(ev.at.Sub(scanned)), ms(toPage))
		} else {
			t.Error("no connected event was published")
		}
	} else {
		t.Error("the observer recorded no connected state")
	}
	p.visibleText("disconnect")
	p.shot("4-connected")

	// The network drops the socket: the page says it is reconnecting, then
	// connected again, with no new scan.
	dropped := time.Now()
	var drop struct {
		Dropped bool `json:"dropped"`
	}
	if _, err := s.Phone.Call("POST", "/devices/"+url.PathEscape(linked.JID)+"/drop", nil, &drop, http.StatusOK); err != nil || !drop.Dropped {
		t.Fatalf("drop the device's socket: %v (dropped %v)", err, drop.Dropped)
	}
	var reconnecting, connected stateAt
	testfactory.WaitFor(t, "the page to go reconnecting → connected after a dropped socket", 30*time.Second, func() (bool, string) {
		states := p.states()
		r, ok := firstState(states, "reconnecting", unixMilli(dropped))
		if !ok {
			return false, fmt.Sprintf("states: %+v", states)
		}
		c, ok := firstState(states, "connected", r.T)
		reconnecting, connected = r, c
		return ok, fmt.Sprintf("states: %+v", states)
	})
	if !strings.Contains(reconnecting.Text, "Reconnecting") || !strings.Contains(connected.Text, "Connected as +"+phone) {
		t.Errorf("after a drop the page said %q, then %q", reconnecting.Text, connected.Text)
	}

	p.click("disconnect")
	v = p.waitState("disconnected", 30*time.Second)
	// The user's own act, said as such (not as if the phone removed it).
	if !strings.Contains(v.Status, "You disconnected WhatsApp") {
		t.Errorf("after disconnect the page says %q", v.Status)
	}
	if got := p.visibleText("connect-again"); got != "Connect again" {
		t.Errorf("the button after disconnect says %q", got)
	}
	p.shot("5-disconnected")
	s.waitDeviceGone(t, linked.JID, "after the page showed disconnected")
}

var pairingCode = regexp.MustCompile(`^[A-Z0-9]{4}-[A-Z0-9]{4}$`)

// codeFlow: link with a phone number instead → the pairing code shown →
// entered on the phone → connected → unlinked on the phone.
func codeFlow(t *testing.T, s *stack, browser context.Context, shots string, f *figures) {
	p := newPage(t, browser, s, "code", shots)
	p.open(s.Token(uuid.NewString(), false))
	p.waitState("none", 20*time.Second)

	// A malformed number is refused with the API's message.
	p.click("phone-toggle")
	p.typeInto("phone-input", "+1555")
	p.do("submit the form", chromedp.Evaluate[chromedp.Void](`document.getElementById('phone-form').requestSubmit()`))
	// The browser's own validation (pattern) stops it before the API.
	if got := eval[bool](p, `document.getElementById('phone-input').validity.valid`); got {
		t.Error("the phone input accepts +1555")
	}
	p.waitState("none", time.Second)

	const phone, name = "+15550002222", "Bea"
	p.do("clear the phone input", chromedp.Evaluate[chromedp.Void](`document.getElementById('phone-input').value = ''`))
	p.typeInto("phone-input", phone)
	p.shot("1-phone-number")
	p.click("phone-submit")
	v := p.waitState("code", 20*time.Second)
	code := p.visibleText("pairing-code")
	if !pairingCode.MatchString(code) {
		t.Fatalf("the page shows pairing code %q", code)
	}
	if !strings.Contains(v.Status, phone) {
		t.Errorf("the status %q does not name %s", v.Status, phone)
	}
	p.shot("2-pairing-code")

	entered := time.Now()
	if _, err := s.Phone.Call("POST", "/phone/code", map[string]string{"code": code, "phone": phone, "name": name}, nil, http.StatusOK); err != nil {
		t.Fatalf("enter the code: %v", err)
	}
	answered := time.Now()
	v = p.waitState("connected", 30*time.Second)
	if want := "Connected as " + phone + " (" + name + ")"; v.Status != want {
		t.Errorf("the page says %q, want %q", v.Status, want)
	}
	if c, ok := firstState(p.states(), "connected", unixMilli(entered)); ok {
		f.add(&f.codeConnected, millis(c.T-unixMilli(answered)))
	}
	p.shot("3-connected")

	// The user unlinks the device on the phone.
	jids, err := s.devices()
	if err != nil || len(jids) == 0 {
		t.Fatalf("the emulator lists no device (%v)", err)
	}
	var jid string
	for _, j := range jids {
		if strings.HasPrefix(j, strings.TrimPrefix(phone, "+")) {
			jid = j
		}
	}
	if _, err := s.Phone.Call("POST", "/devices/"+url.PathEscape(jid)+"/unlink", nil, nil, http.StatusOK); err != nil {
		t.Fatalf("unlink %q on the phone: %v", jid, err)
	}
	v = p.waitState("logged_out", 30*time.Second)
	if want := "WhatsApp was unlinked from your phone (Linked devices → Log out)."; v.Status != want {
		t.Errorf("the page says %q, want %q", v.Status, want)
	}
	p.visibleText("connect-again")
	p.shot("4-unlinked-on-phone")
}

// expiredFlow: nobody scans; the page says the QR code expired and offers
// to connect again.
func expiredFlow(t *testing.T, s *stack, browser context.Context, shots string) {
	p := newPage(t, browser, s, "expired", shots)
	p.open(s.Token(uuid.NewString(), false))
	p.waitState("none", 20*time.Second)
	p.click("connect")
	p.waitState("qr", 20*time.Second)
	v := p.waitState("expired", 60*time.Second) // two codes of 20 s
	if want := "The QR code expired before it was scanned."; v.Status != want {
		t.Errorf("the page says %q, want %q", v.Status, want)
	}
	p.visibleText("connect-again")
	p.shot("1-qr-expired")
}

// badTokenFlow: a token the API refuses is reported as such, and a pasted
// valid token then works.
func badTokenFlow(t *testing.T, s *stack, browser context.Context, shots string) {
	p := newPage(t, browser, s, "token", shots)
	p.open("not-a-token")
	v := p.waitState("token", 20*time.Second)
	if want := "Your token is invalid or expired. Paste a valid one."; v.Error != want {
		t.Errorf("the page's error is %q, want %q", v.Error, want)
	}
	if got := eval[string](p, `sessionStorage.getItem('wasessions.token') || ''`); got != "" {
		t.Errorf("a refused token stays in sessionStorage: %q", got)
	}
	p.shot("1-invalid")

	p.typeInto("token-input", s.Token(uuid.NewString(), false))
	p.click("token-submit")
	v = p.waitState("none", 20*time.Second)
	if v.Error != "" {
		t.Errorf("the error %q stays after a valid token", v.Error)
	}
	p.visibleText("connect")
	p.shot("2-pasted")
}

// reconnectFlow: the api restarts (a deploy); the page says live updates
// were interrupted, reconnects by itself, and shows what happened
// meanwhile (a session created elsewhere) from the state sent first.
func reconnectFlow(t *testing.T, s *stack, browser context.Context, shots string) {
	user := uuid.NewString()
	token := s.Token(user, false)
	p := newPage(t, browser, s, "reconnect", shots)
	p.open(token)
	p.waitState("none", 20*time.Second)

	s.API.Stop(20 * time.Second)
	testfactory.WaitFor(t, "a note about the lost stream after the api stopped", 10*time.Second, func() (bool, string) {
		v := p.viewNow()
		return v.Note != "", "the page shows " + v.String()
	})
	p.shot("1-interrupted")
	s.StartAPI()

	// Created by another tab, say: only the resumed stream tells the page.
	req, err := http.NewRequest("POST", s.APIBase+"/api/integrations/whatsapp/session", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatalf("create a session: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create a session: %d", resp.StatusCode)
	}
	v := p.waitState("qr", 40*time.Second) // retries back off from 3 s
	if v.Note != "" {
		t.Errorf("the note %q stays after the stream resumed", v.Note)
	}
	p.shot("2-resumed")
}

// foreignLinkFlow is the attack of issue 8, finding 5. The victim's tab
// holds their token; an attacker sends them a link to the page carrying
// the attacker's own token, hoping the victim scans their WhatsApp into
// the attacker's account. The tab keeps the victim's token, whether the
// link changes only the fragment or loads the page again, and says it
// ignored the link; the page names the victim as the session's user before
// and while it shows a QR code; the QR's session is the victim's. The
// page's security headers are checked too.
func foreignLinkFlow(t *testing.T, s *stack, browser context.Context, shots string) {
	victim, attacker := uuid.NewString(), uuid.NewString()
	victimTok, attackerTok := s.Token(victim, false), s.Token(attacker, false)
	p := newPage(t, browser, s, "link", shots)
	p.open(victimTok)
	p.waitState("none", 20*time.Second)
	if got := p.visibleText("subject"); !strings.Contains(got, victim) {
		t.Fatalf("the page names %q, want the token's subject %s", got, victim)
	}

	check := func(how string) {
		t.Helper()
		refused := p.waitVisible("link-refused", 10*time.Second)
		if !strings.Contains(refused, attacker) || !strings.Contains(refused, "ignored") {
			t.Errorf("%s: the refusal says %q, want it to name the link's user %s", how, refused, attacker)
		}
		if got := p.visibleText("subject"); !strings.Contains(got, victim) || strings.Contains(got, attacker) {
			t.Errorf("%s: the page names %q, want the victim %s", how, got, victim)
		}
		if got := eval[string](p, `sessionStorage.getItem('wasessions.token') || ''`); got != victimTok {
			t.Errorf("%s: the tab's stored token was replaced", how)
		}
		if v := p.viewNow(); strings.Contains(v.Hash, "token") {
			t.Errorf("%s: the link's token stays in the address: %s", how, v.URL)
		}
	}
	// A link to the same page: only the fragment changes (hashchange).
	eval[chromedp.Void](p, `location.hash = '#token=`+attackerTok+`'`)
	check("fragment change")
	// A link that loads the page again in the same tab.
	p.do("load the attacker's link", chromedp.Navigate(s.APIBase+"/?from=mail#token="+attackerTok))
	p.waitState("none", 20*time.Second)
	check("page load")
	p.shot("1-link-refused")

	p.click("connect")
	p.waitState("qr", 30*time.Second)
	if got := p.visibleText("subject"); !strings.Contains(got, victim) {
		t.Errorf("beside the QR code the page names %q, want %s", got, victim)
	}
	p.shot("2-qr-for-the-victim")
	for _, c := range []struct {
		who, token string
		want       int
	}{{"victim", victimTok, http.StatusOK}, {"attacker", attackerTok, http.StatusNotFound}} {
		req, _ := http.NewRequest("GET", s.APIBase+"/api/integrations/whatsapp/status", nil)
		req.Header.Set("Authorization", "Bearer "+c.token)
		resp, err := s.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("status as the %s: %d, want %d (the QR's session must be the victim's)", c.who, resp.StatusCode, c.want)
		}
	}

	for _, path := range []string{"/", "/app.js", "/style.css"} {
		resp, err := s.HTTP.Get(s.APIBase + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for k, want := range map[string]string{
			"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
		} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("GET %s: %s = %q, want %q", path, k, got, want)
			}
		}
	}
}

// bannedFlow: a linked account that WhatsApp bans for a while (402 with an
// expiry, the emulator's ban): the page says so with the time the ban ends
// (the API's bannedUntil, in the browser's locale) and that no new scan is
// needed, then shows connected again by itself once the ban is over.
func bannedFlow(t *testing.T, s *stack, browser context.Context, shots string) {
	const banFor = 10 * time.Second
	user := uuid.NewString()
	token := s.Token(user, false)
	p := newPage(t, browser, s, "banned", shots)
	p.open(token)
	p.waitState("none", 20*time.Second)
	p.click("connect")
	p.waitState("qr", 30*time.Second)
	raw := eval[string](p, `document.getElementById('qr').dataset.qr`)
	const phone, name = "15550003333", "Cy"
	var linked struct {
		JID string `json:"jid"`
	}
	if _, err := s.Phone.Call("POST", "/phone/scan", map[string]string{"qr": raw, "phone": phone, "name": name}, &linked, http.StatusOK); err != nil {
		t.Fatalf("scan: %v", err)
	}
	p.waitState("connected", 30*time.Second)

	banned := time.Now()
	if _, err := s.Phone.Call("POST", "/refusals/ban", map[string]any{"jid": linked.JID, "seconds": banFor.Seconds()}, nil, http.StatusOK); err != nil {
		t.Fatalf("ban %s: %v", linked.JID, err)
	}
	v := p.waitState("banned", banFor)
	var st struct {
		Status       string  `json:"status"`
		StatusReason string  `json:"statusReason"`
		BannedUntil  *string `json:"bannedUntil"`
	}
	if code := s.apiGet(t, token, "/api/integrations/whatsapp/status", &st); code != http.StatusOK {
		t.Fatalf("GET status: %d", code)
	}
	if st.StatusReason != "temporary_ban" || st.BannedUntil == nil {
		t.Fatalf("the API shows status %s, reason %s, bannedUntil %v while the page shows the ban", st.Status, st.StatusReason, st.BannedUntil)
	}
	until := eval[string](p, fmt.Sprintf(`new Date(%q).toLocaleString()`, *st.BannedUntil))
	if !strings.Contains(v.Status, "temporarily blocked") || !strings.Contains(v.Status, "until "+until) ||
		!strings.Contains(v.Status, "no new scan needed") || !strings.Contains(v.Status, "+"+phone) {
		t.Errorf("the page says %q; want the ban, its end (%s), that no scan is needed, and the account", v.Status, until)
	}
	p.shot("1-banned")

	v = p.waitState("connected", banFor+30*time.Second)
	if time.Since(banned) < banFor-time.Second {
		t.Errorf("the page showed connected %s after a %s ban", time.Since(banned).Round(time.Millisecond), banFor)
	}
	if want := "Connected as +" + phone + " (" + name + ")"; v.Status != want {
		t.Errorf("after the ban the page says %q, want %q", v.Status, want)
	}
	p.shot("2-connected-after-ban")
}
