package httpapi_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"wasessions/internal/events"
	"wasessions/internal/store"
	"wasessions/internal/testfactory"
)

// tryStream opens an event stream and returns the answer whatever its
// status; a 200's body is left open (the test's cleanup closes it).
func (e *env) tryStream(t *testing.T, base, token string) response {
	t.Helper()
	hr, err := http.NewRequest("GET", base+eventsPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode == http.StatusOK {
		t.Cleanup(func() { res.Body.Close() })
		return response{Status: res.StatusCode, Header: res.Header}
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	out := response{Status: res.StatusCode, Header: res.Header, Body: b}
	checkContract(t, "GET", eventsPath, out)
	return out
}

// One token opens the cap of streams; the next one is 429 with the
// envelope, while another user still gets theirs. When one of the
// user's streams ends, the user can open one again. The process cap
// holds across users.
func TestEventStreamCaps(t *testing.T) {
	t.Parallel()
	const perUser, total = 5, 8
	e := newEnv(t, func(s *setup) { s.hub = events.HubOptions{PerUser: perUser, Total: total} })
	base := e.serve()
	tok := e.token(newUser(), false)
	var open []*stream
	for i := 0; i < perUser; i++ {
		open = append(open, e.openStream(t, base, tok))
	}
	e.tryStream(t, base, tok).wantError(t, http.StatusTooManyRequests, "too_many_streams")

	// Another user is not affected by the first one's cap.
	other := e.token(newUser(), false)
	e.openStream(t, base, other).next(10 * time.Second)

	// Closing one stream frees a place (once the server has noticed).
	open[0].res.Body.Close()
	testfactory.EventuallyIn(t, "a place to free up", 30*time.Second, func() bool {
		return e.tryStream(t, base, tok).Status == http.StatusOK
	})

	// The process cap: perUser + 1 streams are open; fill up to total
	// with new users, then the next user is refused.
	for i := perUser + 1; i < total; i++ {
		e.openStream(t, base, e.token(newUser(), false))
	}
	e.tryStream(t, base, e.token(newUser(), false)).wantError(t, http.StatusTooManyRequests, "too_many_streams")
}

// redisClients counts the clients connected to the test's Redis
// database, and those among them in pub/sub mode.
func (e *env) redisClients(t *testing.T) (all, pubsub int) {
	t.Helper()
	db := e.rdb.(*redis.Client).Options().DB
	list, err := e.rdb.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		f := map[string]string{}
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(kv, "=")
			f[k] = v
		}
		if f["db"] != strconv.Itoa(db) {
			continue
		}
		all++
		if f["sub"] != "0" || f["psub"] != "0" {
			pubsub++
		}
	}
	return all, pubsub
}

// 100 event streams from 50 users cost Redis no connection more than
// one: the process subscribes once and fans out in memory. Before the
// hub each stream held its own pub/sub connection, so streams could
// exhaust Redis's maxclients and stop asynq for everyone.
func TestEventStreamsShareOneRedisConnection(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *setup) { s.opts.Heartbeat = time.Minute })
	base := e.serve()
	first := e.openStream(t, base, e.token(newUser(), false))
	first.next(10 * time.Second)
	before, beforeSub := e.redisClients(t)

	var streams []*stream
	for u := 0; u < 50; u++ {
		tok := e.token(newUser(), false)
		for i := 0; i < 2; i++ {
			streams = append(streams, e.openStream(t, base, tok))
		}
	}
	for _, s := range streams {
		s.next(10 * time.Second) // each is live: its first event came
	}
	after, afterSub := e.redisClients(t)
	t.Logf("Redis clients on the test database: %d before, %d after 100 more streams (pub/sub: %d, %d)", before, after, beforeSub, afterSub)
	if after != before || afterSub != 1 {
		t.Fatalf("Redis clients: %d before, %d after 100 streams (pub/sub connections %d, %d); want constant, one pub/sub",
			before, after, beforeSub, afterSub)
	}
}

// Whatever can publish on the events channel can say anything: a forged
// event carrying a fake QR code must not reach the user's page. The
// stream shows what Postgres holds.
func TestForgedEventShowsWhatPostgresHolds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.serve()
	user := newUser()
	tok := e.token(user, false)
	var sess sessionJSON
	e.do(req{method: "POST", path: sessionPath, token: tok}).data(t, &sess)
	w := e.claim(t, sess.SessionID, "w1")
	w.showQR(t, "2@real-one")
	st := e.openStream(t, base, tok)
	st.next(10 * time.Second) // status qr
	if ev, _ := st.next(10 * time.Second); !strings.Contains(ev.Data, "2@real-one") {
		t.Fatalf("first QR: %+v", ev)
	}

	forge := func(ev events.Event) {
		t.Helper()
		ev.UserID, ev.SessionID, ev.At = user, sess.SessionID, time.Now()
		if err := e.bus.Publish(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	forge(events.Event{Type: events.TypeQR, Status: "qr", QRRaw: "2@forged", QRCode: "data:image/png;base64,Zm9yZ2Vk"})
	forge(events.Event{Type: events.TypeStatus, Status: string(store.StatusConnected), Reason: "paired", PhoneNumber: "19990000000"})
	forge(events.Event{Type: events.TypePairingCode, Status: "qr", PairingCode: "FORG-EDXX"})

	// The next real change is the next thing the stream shows: nothing of
	// the forgeries came before it.
	w.showQR(t, "2@real-two")
	ev, _ := st.next(10 * time.Second)
	m := st.decode(ev)
	if ev.Event != "qr" || m["qrRaw"] != "2@real-two" {
		t.Fatalf("after forged events the stream showed %+v, want the real QR from Postgres", ev)
	}
}

// An event stream ends when the token it was opened with expires, and
// says why first.
func TestEventStreamEndsWhenTokenExpires(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *setup) { s.opts.Heartbeat = time.Minute })
	base := e.serve()
	tok, err := e.signer.Sign(newUser(), false, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s := e.openStream(t, base, tok)
	s.next(10 * time.Second)
	sawExpiry := false
	deadline := time.After(60 * time.Second)
	for {
		select {
		case ev, open := <-s.events:
			if !open {
				if !sawExpiry {
					t.Fatal("the stream ended without saying the token expired")
				}
				return
			}
			if ev.Comment == "token expired" {
				sawExpiry = true
			}
		case <-deadline:
			t.Fatal("the stream outlived its token")
		}
	}
}

// Every answer that can carry a QR code or a pairing code says
// Cache-Control: no-store, so no browser or proxy cache keeps a code
// someone else could scan or type.
func TestCodesAreNeverCached(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.serve()
	tok := e.token(newUser(), false)
	var sess sessionJSON
	created := e.do(req{method: "POST", path: sessionPath, token: tok})
	created.data(t, &sess)
	e.claim(t, sess.SessionID, "w1").showQR(t, "2@cached?")
	answers := map[string]response{
		"create":  created,
		"qr":      e.do(req{method: "GET", path: qrPath, token: tok}),
		"status":  e.do(req{method: "GET", path: statusPath, token: tok}),
		"again":   e.do(req{method: "POST", path: sessionPath, token: tok}),
		"events":  e.tryStream(t, base, tok),
		"disconn": e.do(req{method: "POST", path: disconnectPath, token: tok}),
	}
	for name, r := range answers {
		if r.Status >= 300 {
			t.Fatalf("%s: %d %s", name, r.Status, r.Body)
		}
		if got := r.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("%s: Cache-Control %q, want no-store", name, got)
		}
	}
}
