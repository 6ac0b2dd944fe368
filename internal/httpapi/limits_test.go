package httpapi_test

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"wasessions/internal/httpapi"
	"wasessions/internal/ratelimit"
	"wasessions/internal/testenv"
)

// want429 asserts a rate-limit answer: 429, the envelope with code
// rate_limited naming the limit, and a Retry-After in whole seconds
// matching the details.
func want429(t *testing.T, r response, limit string) {
	t.Helper()
	env := r.wantError(t, http.StatusTooManyRequests, "rate_limited")
	if got, _ := env.Error.Details["limit"].(string); got != limit {
		t.Fatalf("details.limit = %q, want %q (%s)", got, limit, r.Body)
	}
	secs, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil || secs < 1 {
		t.Fatalf("Retry-After = %q, want whole seconds >= 1", r.Header.Get("Retry-After"))
	}
	if d, _ := env.Error.Details["retryAfterSeconds"].(float64); int(d) != secs {
		t.Fatalf("details.retryAfterSeconds = %v, Retry-After = %d", env.Error.Details["retryAfterSeconds"], secs)
	}
}

func hourly(n int) ratelimit.Limit { return ratelimit.Limit{N: n, Per: time.Hour} }

// TestCreateLimitPerUser is the attack of issue 8, finding 3: create →
// disconnect → create in a loop. The third new session within the limit's
// period is refused; another user is not affected; a create that returns
// the live session is free (clients retry creates).
func TestCreateLimitPerUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *setup) { s.opts.Limits.Create = hourly(2) })
	attacker, other := e.token(newUser(), false), e.token(newUser(), false)
	for i := range 2 {
		if r := e.do(req{method: "POST", path: sessionPath, token: attacker}); r.Status != http.StatusCreated {
			t.Fatalf("create %d: %d %s", i+1, r.Status, r.Body)
		}
		// Retries of a create while the session is live cost nothing.
		for range 3 {
			if r := e.do(req{method: "POST", path: sessionPath, token: attacker}); r.Status != http.StatusOK {
				t.Fatalf("create while live: %d %s", r.Status, r.Body)
			}
		}
		if r := e.do(req{method: "POST", path: disconnectPath, token: attacker}); r.Status != http.StatusAccepted {
			t.Fatalf("disconnect %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	want429(t, e.do(req{method: "POST", path: sessionPath, token: attacker}), "create")
	if r := e.do(req{method: "POST", path: sessionPath, token: other}); r.Status != http.StatusCreated {
		t.Fatalf("another user's create: %d %s", r.Status, r.Body)
	}
}

// TestLimitsSharedAcrossReplicas: two API servers on one Redis DB and one
// database, as two replicas behind a load balancer. Alternating between
// them does not double the limit.
func TestLimitsSharedAcrossReplicas(t *testing.T) {
	t.Parallel()
	st, _ := testenv.NewStore(t)
	rdb := testenv.NewRedisDB(t)
	shared := func(s *setup) {
		s.st, s.redisURL = st, rdb.URL()
		s.opts.Limits = httpapi.Limits{Create: hourly(2), Disconnect: hourly(3)}
	}
	a, b := newEnv(t, shared), newEnv(t, shared)
	tok := a.token(newUser(), false)
	for i, e := range []*env{a, b} {
		if r := e.do(req{method: "POST", path: sessionPath, token: tok}); r.Status != http.StatusCreated {
			t.Fatalf("create %d: %d %s", i+1, r.Status, r.Body)
		}
		if r := e.do(req{method: "POST", path: disconnectPath, token: tok}); r.Status != http.StatusAccepted {
			t.Fatalf("disconnect %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	want429(t, a.do(req{method: "POST", path: sessionPath, token: tok}), "create")
	want429(t, b.do(req{method: "POST", path: sessionPath, token: tok}), "create")
	// Disconnect: two spent above, one left across both replicas.
	if r := b.do(req{method: "POST", path: disconnectPath, token: tok}); r.Status != http.StatusAccepted {
		t.Fatalf("third disconnect: %d %s", r.Status, r.Body)
	}
	want429(t, a.do(req{method: "POST", path: disconnectPath, token: tok}), "disconnect")
	want429(t, b.do(req{method: "POST", path: disconnectPath, token: tok}), "disconnect")
}

// TestPairingPhoneLimit: many users (or one attacker's many accounts) ask
// for pairing codes for one victim's number: each would make WhatsApp
// notify that phone. Three an hour get through, the fourth is refused
// whoever asks; other numbers and QR sessions are not affected; a bad
// phone number is a 400 and costs nothing.
func TestPairingPhoneLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *setup) { s.opts.Limits.PairingPhone = hourly(3) })
	victim := []byte(`{"phoneNumber":"+15550001234"}`)
	e.do(req{method: "POST", path: sessionPath, token: e.token(newUser(), false), body: []byte(`{"phoneNumber":"15550001234"}`)}).
		wantError(t, http.StatusBadRequest, "invalid_phone_number")
	for i := range 3 {
		if r := e.do(req{method: "POST", path: sessionPath, token: e.token(newUser(), false), body: victim}); r.Status != http.StatusCreated {
			t.Fatalf("pairing %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	late := e.token(newUser(), false)
	want429(t, e.do(req{method: "POST", path: sessionPath, token: late, body: victim}), "pairing_phone")
	if r := e.do(req{method: "POST", path: sessionPath, token: late, body: []byte(`{"phoneNumber":"+15550009999"}`)}); r.Status != http.StatusCreated {
		t.Fatalf("another number: %d %s", r.Status, r.Body)
	}
	if r := e.do(req{method: "POST", path: sessionPath, token: e.token(newUser(), false)}); r.Status != http.StatusCreated {
		t.Fatalf("a QR session: %d %s", r.Status, r.Body)
	}
}

// TestDisconnectLimitPerUser: disconnect requests per user.
func TestDisconnectLimitPerUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *setup) { s.opts.Limits.Disconnect = hourly(2) })
	tok := e.token(newUser(), false)
	e.do(req{method: "POST", path: sessionPath, token: tok})
	for i := range 2 {
		if r := e.do(req{method: "POST", path: disconnectPath, token: tok}); r.Status >= 300 {
			t.Fatalf("disconnect %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	want429(t, e.do(req{method: "POST", path: disconnectPath, token: tok}), "disconnect")
	// Not authenticated: 401 before any limit.
	e.do(req{method: "POST", path: disconnectPath}).wantError(t, http.StatusUnauthorized, "token_missing")
}

// TestSendLimitPerUser: POST /messages per user (RATE_LIMIT_SEND). Over the
// limit the answer is 429 and nothing is queued; another user still sends.
func TestSendLimitPerUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *setup) { s.opts.Limits.Send = hourly(3) })
	_, tok, _ := e.linkedUser(t)
	for i := range 3 {
		if r := e.do(req{method: "POST", path: messagesPath, token: tok, body: sendBody("+15557654321", fmt.Sprint("hi ", i))}); r.Status != http.StatusAccepted {
			t.Fatalf("send %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	want429(t, e.do(req{method: "POST", path: messagesPath, token: tok, body: sendBody("+15557654321", "one too many")}), "send")
	var list struct {
		Messages []messageJSON `json:"messages"`
	}
	e.do(req{method: "GET", path: messagesPath, token: tok}).data(t, &list)
	if len(list.Messages) != 3 {
		t.Fatalf("%d messages queued, want the 3 within the limit", len(list.Messages))
	}
	// The count is the user's: another user (with no session) gets the
	// route's own answer, not 429.
	other := e.token(newUser(), false)
	e.do(req{method: "POST", path: messagesPath, token: other, body: sendBody("+15557654321", "hi")}).wantError(t, http.StatusConflict, "session_not_linked")
	// Not authenticated: 401 before any limit.
	e.do(req{method: "POST", path: messagesPath, body: sendBody("+15557654321", "hi")}).wantError(t, http.StatusUnauthorized, "token_missing")
}
