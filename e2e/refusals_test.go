package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"wasessions/e2e/harness"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
)

// The emulator's refusal switches (internal/waemu/refusals.go): what the
// real WhatsApp does to a client that is too old, banned, or unavailable.

type refusalStats struct {
	Outdated    int64 `json:"outdated"`
	Banned      int64 `json:"banned"`
	Unavailable int64 `json:"unavailable"`
}

func (c *emuClient) refusalStats() (refusalStats, error) {
	var r refusalStats
	_, err := c.Call("GET", "/refusals/stats", nil, &r, http.StatusOK)
	return r, err
}

// setVersion sets the minimum client version ("min-version") or the one
// the version document announces ("served-version").
func (c *emuClient) setVersion(which, v string) error {
	_, err := c.Call("PUT", "/refusals/"+which, map[string]string{"version": v}, nil, http.StatusOK)
	return err
}

// ban refuses device jid's logins with 402 for d.
func (c *emuClient) ban(jid string, d time.Duration) error {
	_, err := c.Call("POST", "/refusals/ban", map[string]any{"jid": jid, "seconds": d.Seconds()}, nil, http.StatusOK)
	return err
}

// loginFrom is the remote address the emulator saw device jid's last login
// arrive from.
func (c *emuClient) loginFrom(jid string) (string, error) {
	var r struct {
		Remote string `json:"remote"`
	}
	_, err := c.Call("GET", "/logins/"+url.PathEscape(jid), nil, &r, http.StatusOK)
	return r.Remote, err
}

var clientRevision = regexp.MustCompile(`"client_revision":(\d+)`)

// servedRevision reads the version document (GET /web) the workers fetch
// and returns the web client revision it announces (the version's third
// part).
func (c *emuClient) servedRevision() (int, error) {
	code, body := harness.HTTPGet(c.HTTP, c.Base+"/web")
	m := clientRevision.FindStringSubmatch(body)
	if code != http.StatusOK || m == nil {
		return 0, fmt.Errorf("emulator GET /web: %d %.200s", code, body)
	}
	return strconv.Atoi(m[1])
}

// metricWhere sums the series of a metric a worker serves whose labels
// contain every one of labels, e.g. metricWhere("w1",
// "wasessions_worker_version_fetches_total", `outcome="changed"`) (0 when
// the worker serves none yet).
func (s *stack) metricWhere(id, name string, labels ...string) float64 {
	s.T.Helper()
	code, body := s.WorkerGet(id, "/metrics")
	if code != http.StatusOK {
		s.T.Fatalf("worker %s /metrics: %d %s", id, code, body)
	}
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(line, name+"{")
		if !ok {
			continue
		}
		set, value, ok := strings.Cut(rest, "} ")
		if !ok || slices.ContainsFunc(labels, func(l string) bool { return !strings.Contains(set, l) }) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			s.T.Fatalf("worker %s: %q: %v", id, line, err)
		}
		sum += v
	}
	return sum
}

// linkRetrying links one session like linkE, for a new user each attempt.
// The linking itself is not what the refusal test proves (TestLink and
// the scale tests do): on a machine busy with other suites a pairing can
// time out, and such an attempt is disconnected (its device logged out)
// and made again, at most three times. The test counts pairings from
// after the linking.
func (s *stack) linkRetrying(i int) (linked, error) {
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		user := newUser()
		var l linked
		if l, err = s.linkE(user, phoneOf(2000+i), fmt.Sprintf("Refusal %d", i)); err == nil {
			return l, nil
		}
		s.T.Logf("link %d, attempt %d failed (retrying with a new user): %v", i, attempt, err)
		if cerr := s.disconnectAndWait(user); cerr != nil {
			return l, fmt.Errorf("%w; and clearing the failed attempt: %v", err, cerr)
		}
	}
	return linked{}, err
}

// disconnectAndWait disconnects user's session, if any, and waits until it
// has ended (its device, if it had one, logged out).
func (s *stack) disconnectAndWait(user string) error {
	r, err := s.client.do("POST", pathDisconnect, user, false)
	if err != nil {
		return err
	}
	if r.Status == http.StatusNotFound {
		return nil
	}
	if r.Status != http.StatusAccepted && r.Status != http.StatusOK {
		return fmt.Errorf("disconnect: %s", r)
	}
	return testfactory.Poll(harness.WaitLong, 200*time.Millisecond, func() (bool, string) {
		st, err := s.client.status(user)
		if err != nil {
			return strings.Contains(err.Error(), "404"), err.Error()
		}
		live := st.Status == "pending" || st.Status == "qr" || st.Status == "connected" || st.Status == "reconnecting"
		return !live, "status " + st.Status
	})
}

// TestRealWhatsAppRefusalsHeal plays, against the real programs, what the
// real WhatsApp does and the emulator did not before issue 16: it retires
// a client version, bans an account for a while, and one worker's network
// path to it breaks. None of it may cost a user a new scan. Worker w1
// reaches WhatsApp through a SOCKS5 proxy on loopback (WA_PROXY, with
// credentials); w2 starts later, directly connected.
//
//  1. 20 sessions linked on w1: the emulator saw every login arrive from
//     the proxy, and lists each device under DEVICE_NAME/DEVICE_PLATFORM;
//     the proxy's password is in no log.
//  2. The minimum client version is raised above what the workers announce
//     (and the version document announces it): the emulator sends every
//     client away and refuses the old version (405); w1 reads the new
//     version from the document and every session logs in again with it.
//  3. Two accounts are banned for 10 s: the API shows temporary_ban and
//     bannedUntil; the worker tries nothing until then (one refused login
//     each), then both connect by themselves.
//  4. w2 starts and w1's proxy refuses everything: after RELEASE_AFTER
//     without a connection w1 releases its sessions to w2, which connects
//     them directly.
//
// Throughout: no new pairing, no session ever failed, and no conflict (two
// clients of one device), which the stack checks at the end.
func TestRealWhatsAppRefusalsHeal(t *testing.T) {
	const (
		n            = 20
		banned       = 2
		banFor       = 10 * time.Second
		releaseAfter = 4 * time.Second
		deviceName   = "E2E Desk"
		proxyUser    = "e2e-user"
		proxyPass    = "proxy-pass-7c2e91"
	)
	proxy := testenv.NewSOCKS5(t, proxyUser, proxyPass)
	s := newStack(t, stackOpts{
		Workers: []string{"w1", "w2"},
		Later:   []string{"w2"},
		Env: map[string]string{
			"RELEASE_AFTER":       releaseAfter.String(),
			"REBALANCE_MAX_MOVES": "0", // sessions move only because a path broke
			"DEVICE_NAME":         deviceName,
			"DEVICE_PLATFORM":     "firefox",
		},
		WorkerEnv: map[string]map[string]string{
			"w1": {"WA_PROXY": "socks5://" + proxyUser + ":" + proxyPass + "@" + proxy.Addr()},
		},
	})
	start := time.Now()

	// 1. Link n sessions on w1, through its proxy.
	ls := make([]linked, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 10)
	done := make(chan int)
	for i := range n {
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ls[i], errs[i] = s.linkRetrying(i)
			done <- i
		}()
	}
	for range n {
		<-done
	}
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ids := sessionIDs(ls)
	s.waitAllConnected(ids, harness.WaitLong)
	t.Logf("phase 1: %d sessions linked on w1 in %s", n, time.Since(start).Round(time.Millisecond))
	base := s.EmuStats()

	onward := proxy.Onward()
	for _, l := range ls {
		from, err := s.phone.loginFrom(l.jid)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(onward, from) {
			t.Errorf("device %s logged in from %s, not through w1's proxy (its connections onward: %v)", l.jid, from, onward)
		}
		d, found, err := s.phone.Device(l.jid)
		if err != nil || !found {
			t.Fatalf("emulator device %s: found %v, %v", l.jid, found, err)
		}
		if d.OS != deviceName || d.Platform != "FIREFOX" {
			t.Errorf("the phone lists device %s as %q on %q, want %q on FIREFOX (DEVICE_NAME, DEVICE_PLATFORM)", l.jid, d.OS, d.Platform, deviceName)
		}
	}
	if s.Workers["w1"].LogContains(proxyPass) {
		t.Error("w1's log contains the proxy's password")
	}

	// 2. WhatsApp retires the version every client announces.
	rev, err := s.phone.servedRevision()
	if err != nil {
		t.Fatal(err)
	}
	next := fmt.Sprintf("2.3000.%d", rev+1)
	if err := s.phone.setVersion("served-version", next); err != nil {
		t.Fatal(err)
	}
	if err := s.phone.setVersion("min-version", next); err != nil {
		t.Fatal(err)
	}
	raised := time.Now()
	// Every device must log in again (the emulator refuses anything older
	// than next, so a login now is one with the new version).
	s.WaitFor(fmt.Sprintf("%d logins with version %s", n, next), harness.WaitLong, func() (bool, string) {
		st, err := s.phone.Stats()
		return err == nil && st.Logins-base.Logins >= n, fmt.Sprintf("%d logins since (err %v)", st.Logins-base.Logins, err)
	})
	s.waitAllConnected(ids, harness.WaitLong)
	ref, err := s.phone.refusalStats()
	if err != nil {
		t.Fatal(err)
	}
	if ref.Outdated == 0 {
		t.Error("the emulator refused no login as outdated: the version raise did not reach the workers")
	}
	if got := s.metricWhere("w1", "wasessions_worker_version_fetches_total", `outcome="changed"`); got < 1 {
		t.Errorf("w1 counted %v version fetches that changed the version, want at least 1", got)
	}
	if !s.Workers["w1"].LogContains(`"client version updated"`) || !s.Workers["w1"].LogContains(next) {
		t.Errorf("w1 did not log that it updated the client version to %s", next)
	}
	s.checkAllConnectedInAPI(ls)
	t.Logf("phase 2: minimum version raised to %s; all %d connected again %s later (%d logins refused as outdated)",
		next, n, time.Since(raised).Round(time.Millisecond), ref.Outdated)

	// 3. Two accounts banned for 10 s.
	bannedAt := time.Now()
	for _, l := range ls[:banned] {
		if err := s.phone.ban(l.jid, banFor); err != nil {
			t.Fatal(err)
		}
	}
	untils := make([]time.Time, banned)
	for i, l := range ls[:banned] {
		s.WaitFor("the API to show "+l.sessionID+" banned", banFor, func() (bool, string) {
			st, err := s.client.status(l.user)
			if err != nil {
				return false, err.Error()
			}
			if st.Status == "reconnecting" && st.reason() == "temporary_ban" && st.BannedUntil != nil {
				untils[i] = *st.BannedUntil
				return true, ""
			}
			return false, fmt.Sprintf("status %s reason %s bannedUntil %v", st.Status, st.reason(), st.BannedUntil)
		})
		// The emulator sends the seconds left, rounded up; the worker adds
		// them to the moment it was refused.
		if lo, hi := bannedAt.Add(banFor-time.Second), bannedAt.Add(banFor+5*time.Second); untils[i].Before(lo) || untils[i].After(hi) {
			t.Errorf("session %s: bannedUntil %s, want between %s and %s", l.sessionID, untils[i].Format(time.RFC3339Nano),
				lo.Format(time.RFC3339Nano), hi.Format(time.RFC3339Nano))
		}
	}
	for i, l := range ls[:banned] {
		s.WaitFor("banned session "+l.sessionID+" connected by itself", banFor+harness.WaitLong, func() (bool, string) {
			st, err := s.client.status(l.user)
			if err != nil {
				return false, err.Error()
			}
			return st.Status == "connected" && st.IsConnected, fmt.Sprintf("status %s reason %s", st.Status, st.reason())
		})
		if now := time.Now(); now.Before(untils[i]) {
			t.Errorf("session %s connected at %s, before its ban ended (%s)", l.sessionID, now.Format(time.RFC3339Nano), untils[i].Format(time.RFC3339Nano))
		}
	}
	s.waitAllConnected(ids, harness.WaitLong)
	after, err := s.phone.refusalStats()
	if err != nil {
		t.Fatal(err)
	}
	if got := after.Banned - ref.Banned; got != banned {
		t.Errorf("the emulator refused %d logins as banned, want %d (one each: nothing is tried before the ban ends)", got, banned)
	}
	t.Logf("phase 3: %d sessions banned for %s; connected by themselves %s after the ban",
		banned, banFor, time.Since(bannedAt).Round(time.Millisecond))

	// 4. w1's path to WhatsApp breaks; w2 is there to take over.
	s.StartWorker("w2")
	broken := time.Now()
	proxy.Refuse(true)
	s.WaitFor(fmt.Sprintf("all %d sessions on w2", n), releaseAfter+harness.WaitLong, func() (bool, string) {
		per, err := s.ConnectedPerWorker(ids, nil)
		return err == nil && per["w2"] == n, fmt.Sprintf("connected per worker %v (err %v)", per, err)
	})
	moved := time.Since(broken)
	if moved < releaseAfter {
		t.Errorf("the sessions left w1 %s after its path broke, before RELEASE_AFTER (%s)", moved, releaseAfter)
	}
	if got := s.Metric("w1", "wasessions_worker_unreachable_releases_total"); got < n {
		t.Errorf("w1 counted %v releases of unreachable sessions, want at least %d", got, n)
	}
	onward = proxy.Onward()
	for _, l := range ls {
		if from, err := s.phone.loginFrom(l.jid); err != nil || slices.Contains(onward, from) {
			t.Errorf("device %s's last login came from %s (err %v), through w1's broken proxy", l.jid, from, err)
		}
	}
	s.checkHostedOnce(n)
	s.checkAllConnectedInAPI(ls)
	t.Logf("phase 4: w1's proxy refused; all %d sessions connected on w2 %s later (RELEASE_AFTER %s)",
		n, moved.Round(time.Millisecond), releaseAfter)

	for _, id := range s.WorkerIDs {
		if f := s.metricWhere(id, "wasessions_worker_status_changes_total", `status="failed"`); f != 0 {
			t.Errorf("%s ended %v sessions failed", id, f)
		}
	}
	end := s.EmuStats()
	if end.Pairings != base.Pairings || end.Conflicts != 0 {
		t.Errorf("emulator after linking %+v, at the end %+v: want no new pairing and no conflict", base, end)
	}
	for _, p := range []*harness.Proc{s.Workers["w1"], s.Workers["w2"], s.API} {
		if p.LogContains(proxyPass) {
			t.Errorf("%s's log contains the proxy's password", p.Name)
		}
	}
	t.Logf("whole test after the stack started: %s", time.Since(start).Round(time.Millisecond))
}

// checkAllConnectedInAPI checks that every session is connected in the
// API, under the same session id (none ended and was created again).
func (s *stack) checkAllConnectedInAPI(ls []linked) {
	s.T.Helper()
	for _, l := range ls {
		st, err := s.client.status(l.user)
		if err != nil {
			s.T.Fatal(err)
		}
		if st.SessionID != l.sessionID || st.Status != "connected" {
			s.T.Errorf("user %s: session %s %s (%s), want %s connected", l.user, st.SessionID, st.Status, st.reason(), l.sessionID)
		}
	}
}
