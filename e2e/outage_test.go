package e2e

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"wasessions/e2e/harness"
	"wasessions/internal/testenv"
)

// Scenario 10, Redis restart and Postgres restart during a run of 20
// linked sessions on two workers, with private redis-server and postgres
// processes (the private Redis keeps no data: its restart loses every
// queue, so the reconciler must recover whatever was in flight).
//
// While a store is down the API answers 503 with a code naming it, never
// 500. Afterwards all 20 sessions are connected, none lost, none hosted
// twice, none paired again. While Postgres is down the workers cannot renew
// their leases, so they stop their clients before the leases can lapse
// (self-fencing); the reconciler restores them when Postgres is back.
func TestRedisAndPostgresRestarts(t *testing.T) {
	const n = 20
	pg := testenv.StartPostgresServer(t)
	rs := testenv.StartRedisServer(t)
	s := newStack(t, stackOpts{Workers: []string{"w1", "w2"}, PG: pg, Redis: rs})
	ls := s.linkMany(n, 10)
	ids := sessionIDs(ls)
	s.waitAllConnected(ids, harness.WaitLong)
	s.checkHostedOnce(n)

	// Redis.
	probe := newUser()
	watch := s.watchAPI(ls[0].user, "")
	rs.Stop()
	start := time.Now()
	time.Sleep(time.Second)
	// A create while Redis is down: the row is kept, the task cannot be
	// queued, the answer says so and names the session.
	r, err := s.client.do("POST", pathSession, probe, false)
	if err != nil || r.Status != http.StatusServiceUnavailable || r.code() != "redis_unavailable" {
		t.Errorf("create while Redis is down: %s (%v), want 503 redis_unavailable", r, err)
	} else if sid, _ := r.Env.Error.Details["sessionId"].(string); sid == "" {
		t.Errorf("the 503 does not name the session it kept: %s", r)
	}
	time.Sleep(3 * time.Second)
	rs.Start()
	seen := watch.finish()
	t.Logf("Redis down for %s; API answers meanwhile: %s", time.Since(start).Round(time.Millisecond), seen.summary())
	seen.check(t, "redis_unavailable")
	// Sessions never depended on Redis: all still connected, once each.
	s.waitAllConnected(ids, harness.WaitLong)
	s.checkHostedOnce(n)
	// The probe's session was created while Redis was down; the
	// reconciler queues it once Redis is back (it shows a QR).
	s.WaitFor("the probe session's QR after Redis returned", harness.WaitLong, func() (bool, string) {
		_, r, err := s.client.qr(probe)
		return err == nil && r.Status == http.StatusOK, fmt.Sprintf("%s %v", r, err)
	})
	if _, err := s.client.data("POST", pathDisconnect, probe, false, http.StatusAccepted, nil); err != nil {
		t.Fatal(err)
	}
	s.checkNoRepairing(n)

	// Postgres.
	watch = s.watchAPI(ls[0].user, ls[1].user)
	pg.Stop()
	start = time.Now()
	s.WaitFor("the workers to stop their clients (self-fencing)", harness.WaitLong, func() (bool, string) {
		c, err := s.phone.ConnectedDevices()
		return err == nil && c == 0, fmt.Sprintf("%d devices still connected (err %v)", c, err)
	})
	t.Logf("all clients stopped %s after Postgres went down (LEASE_TTL %s)", time.Since(start).Round(time.Millisecond), harness.LeaseTTL)
	time.Sleep(time.Second)
	pg.Start()
	seen = watch.finish()
	t.Logf("Postgres down for %s; API answers meanwhile: %s", time.Since(start).Round(time.Millisecond), seen.summary())
	seen.check(t, "database_unavailable")
	took := s.waitAllConnected(ids, 2*harness.WaitLong)
	t.Logf("all %d sessions connected again %s after Postgres returned", n, took.Round(time.Millisecond))
	s.checkHostedOnce(n)
	s.checkNoRepairing(n)
}

// apiWatch polls the API while a store is down, as frontends keep doing.
type apiWatch struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	seen []apiAnswer
}

type apiAnswer struct {
	call   string
	status int
	code   string
	err    string
}

// watchAPI polls /readyz, GET /status and GET /stats as user, and POST
// /session as user2 (a user whose session is live: the answer is the
// existing session, read from Postgres), every 100 ms until finish.
func (s *stack) watchAPI(user, user2 string) *apiWatch {
	w := &apiWatch{stop: make(chan struct{}), done: make(chan struct{})}
	type call struct{ method, path, user string }
	calls := []call{{"GET", "/readyz", ""}, {"GET", pathStatus, user}, {"GET", pathStats, user}}
	if user2 != "" {
		calls = append(calls, call{"POST", pathSession, user2})
	}
	go func() {
		defer close(w.done)
		for {
			for _, c := range calls {
				select {
				case <-w.stop:
					return
				default:
				}
				r, err := s.client.do(c.method, c.path, c.user, false)
				a := apiAnswer{call: c.method + " " + c.path, status: r.Status, code: r.code()}
				if err != nil {
					a.err = err.Error()
				}
				w.mu.Lock()
				w.seen = append(w.seen, a)
				w.mu.Unlock()
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return w
}

type apiAnswers []apiAnswer

func (w *apiWatch) finish() apiAnswers {
	close(w.stop)
	<-w.done
	return w.seen
}

// summary counts answers by call, status and code.
func (as apiAnswers) summary() string {
	n := map[string]int{}
	for _, a := range as {
		k := fmt.Sprintf("%s %d %s", a.call, a.status, a.code)
		if a.err != "" {
			k = a.call + " error"
		}
		n[k]++
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", strings.TrimSpace(k), n[k])
	}
	return strings.Join(parts, "; ")
}

// check fails the test for any 5xx other than a 503 with a store's code,
// for any transport error (the API must stay up), and if no 503 named the
// store that was down.
func (as apiAnswers) check(t *testing.T, wantCode string) {
	t.Helper()
	named := false
	for _, a := range as {
		switch {
		case a.err != "":
			t.Errorf("%s: %s", a.call, a.err)
		case a.status == http.StatusServiceUnavailable:
			switch a.code {
			case "redis_unavailable", "database_unavailable", "not_ready":
				named = named || a.code == wantCode
			default:
				t.Errorf("%s: 503 with code %q, want one that names the store", a.call, a.code)
			}
		case a.status >= 500:
			t.Errorf("%s: %d %s while a store was down; want 503", a.call, a.status, a.code)
		}
	}
	if !named {
		t.Errorf("no answer was a 503 %s while the store was down", wantCode)
	}
}
