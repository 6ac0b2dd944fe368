package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"wasessions/internal/events"
	"wasessions/internal/store"
)

// sseEvent is one parsed server-sent event, or a comment.
type sseEvent struct {
	ID, Event, Data, Comment string
	Retry                    string
}

// stream is an open event stream read line by line.
type stream struct {
	t      *testing.T
	res    *http.Response
	events chan sseEvent
}

func (e *env) openStream(t *testing.T, base, token string) *stream {
	t.Helper()
	return e.openStreamAt(t, base, eventsPath, token)
}

// openStreamAt opens the event stream at path (the user's or the admin's).
func (e *env) openStreamAt(t *testing.T, base, path, token string) *stream {
	t.Helper()
	hr, err := http.NewRequest("GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Authorization", "Bearer "+token)
	hr.Header.Set("Accept", "text/event-stream")
	res, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		t.Fatalf("events: %d %s", res.StatusCode, b)
	}
	// The head against the contract (the body is a stream).
	checkContract(t, "GET", path, response{Status: res.StatusCode, Header: res.Header})
	s := &stream{t: t, res: res, events: make(chan sseEvent, 64)}
	go func() {
		defer close(s.events)
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var cur sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if cur != (sseEvent{}) {
					s.events <- cur
				}
				cur = sseEvent{}
			case strings.HasPrefix(line, ":"):
				cur.Comment = strings.TrimSpace(line[1:])
			case strings.HasPrefix(line, "id: "):
				cur.ID = line[4:]
			case strings.HasPrefix(line, "event: "):
				cur.Event = line[7:]
			case strings.HasPrefix(line, "data: "):
				cur.Data = line[6:]
			case strings.HasPrefix(line, "retry: "):
				cur.Retry = line[7:]
			}
		}
	}()
	t.Cleanup(func() { res.Body.Close() })
	return s
}

// next returns the next event that is not a heartbeat (those are counted).
func (s *stream) next(within time.Duration) (sseEvent, bool) {
	s.t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case ev, open := <-s.events:
			if !open {
				return sseEvent{}, false
			}
			if ev.Comment != "" || ev.Retry != "" {
				continue
			}
			return ev, true
		case <-timer.C:
			s.t.Fatalf("no event within %s", within)
		}
	}
}

// decode checks an event's data against the contract and decodes it.
func (s *stream) decode(ev sseEvent) map[string]any {
	s.t.Helper()
	doc, _ := spec(s.t)
	checkJSON(s.t, doc, "SessionEvent", []byte(ev.Data))
	var m map[string]any
	if err := json.Unmarshal([]byte(ev.Data), &m); err != nil {
		s.t.Fatal(err)
	}
	if m["type"] != ev.Event {
		s.t.Fatalf("event: %q but data type %v", ev.Event, m["type"])
	}
	return m
}

func TestEventsStream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newEnv(t, func(s *setup) { s.opts.BaseContext = ctx; s.opts.Heartbeat = 100 * time.Millisecond })
	base := e.serve()
	a, b := newUser(), newUser()
	ta, tb := e.token(a, false), e.token(b, false)

	// B has no session: the stream says so first.
	sb := e.openStream(t, base, tb)
	ev, _ := sb.next(10 * time.Second)
	if m := sb.decode(ev); ev.Event != "status" || m["status"] != "none" {
		t.Fatalf("B's first event: %+v", ev)
	}

	// A has a session showing a QR: status then qr come first.
	var sa sessionJSON
	e.do(req{method: "POST", path: sessionPath, token: ta}).data(t, &sa)
	w := e.claim(t, sa.SessionID, "w1")
	w.showQR(t, "2@qr-one")
	st := e.openStream(t, base, ta)
	ev, _ = st.next(10 * time.Second)
	if m := st.decode(ev); ev.Event != "status" || m["status"] != "qr" || m["sessionId"] != sa.SessionID {
		t.Fatalf("A's first event: %+v", ev)
	}
	ev, _ = st.next(10 * time.Second)
	if m := st.decode(ev); ev.Event != "qr" || m["qrRaw"] != "2@qr-one" || !strings.HasPrefix(m["qrCode"].(string), "data:image/png;base64,") {
		t.Fatalf("A's second event: %+v", ev)
	}

	// Events published by a worker (any host: it only needs Redis) arrive.
	w.showQR(t, "2@qr-two")
	ev, _ = st.next(10 * time.Second)
	if m := st.decode(ev); ev.Event != "qr" || m["qrRaw"] != "2@qr-two" {
		t.Fatalf("published QR: %+v", ev)
	}
	w.connect(t, "15550001111", "Alice")
	ev, _ = st.next(10 * time.Second)
	if m := st.decode(ev); ev.Event != "status" || m["status"] != "connected" || m["reason"] != "paired" || m["phoneNumber"] != "+15550001111" {
		t.Fatalf("connected: %+v", ev)
	}
	if ev.ID == "" {
		t.Fatal("events carry no id")
	}

	// Heartbeats keep coming on an idle stream.
	waitForComment(t, st, "ping")

	// B never got any of A's events: only heartbeats after its first.
	// B's own change, announced last, is the next thing B sees.
	var sbSess sessionJSON
	e.do(req{method: "POST", path: sessionPath, token: tb}).data(t, &sbSess)
	if err := e.bus.Publish(context.Background(), events.Event{Type: events.TypeStatus, SessionID: sbSess.SessionID,
		UserID: b, Status: string(store.StatusPending), At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	ev, _ = sb.next(10 * time.Second)
	if m := sb.decode(ev); m["sessionId"] != sbSess.SessionID || m["status"] != "pending" {
		t.Fatalf("B received another user's event before its own marker: %+v", ev)
	}

	// Shutdown (BaseContext done) ends open streams.
	cancel()
	for _, s := range []*stream{st, sb} {
		deadline := time.After(10 * time.Second)
	drain:
		for {
			select {
			case _, open := <-s.events:
				if !open {
					break drain
				}
			case <-deadline:
				t.Fatal("stream still open after shutdown")
			}
		}
	}
}

func waitForComment(t *testing.T, s *stream, text string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev, open := <-s.events:
			if !open {
				t.Fatal("stream ended")
			}
			if ev.Comment == text {
				return
			}
		case <-deadline:
			t.Fatalf("no %q comment", text)
		}
	}
}

func TestEventsStreamEndsWhenClientLeaves(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *setup) { s.opts.Heartbeat = 50 * time.Millisecond })
	base := e.serve()
	s := e.openStream(t, base, e.token(newUser(), false))
	s.next(10 * time.Second)
	s.res.Body.Close()
	// The server notices at its next write and closes its subscription.
	waitFor(t, "the stream to end server-side", 10*time.Second, func() bool {
		return strings.Contains(e.logs.String(), "event stream ended")
	})
}
