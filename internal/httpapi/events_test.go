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
	"wasessions/internal/testfactory"
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

	// A temporary ban: the stream says until when (the page shows it).
	until := time.Now().Add(10 * time.Second).UTC().Truncate(time.Millisecond)
	banned, err := e.store.MarkBanned(context.Background(), w.fence, until, store.ErrTemporaryBan)
	if err != nil {
		t.Fatal(err)
	}
	w.publish(t, events.TypeStatus, banned)
	ev, _ = st.next(10 * time.Second)
	if m := st.decode(ev); ev.Event != "status" || m["status"] != "reconnecting" || m["reason"] != "temporary_ban" ||
		m["bannedUntil"] != until.Format(time.RFC3339Nano) {
		t.Fatalf("banned until %s: %+v", until.Format(time.RFC3339Nano), ev)
	}
	// Nothing changed since: a repeated signal sends nothing new.
	w.publish(t, events.TypeStatus, banned)
	w.connect(t, "15550001111", "Alice")
	ev, _ = st.next(10 * time.Second)
	if m := st.decode(ev); ev.Event != "status" || m["status"] != "connected" || m["bannedUntil"] != nil {
		t.Fatalf("connected after the ban: %+v", ev)
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
	testfactory.EventuallyIn(t, "the stream to end server-side", 10*time.Second, func() bool {
		return strings.Contains(e.logs.String(), "event stream ended")
	})
}

// decodeMessage checks a message event's data against the contract
// (MessageEvent) and decodes it.
func (s *stream) decodeMessage(ev sseEvent) messageEventJSON {
	s.t.Helper()
	doc, _ := spec(s.t)
	checkJSON(s.t, doc, "MessageEvent", []byte(ev.Data))
	var m messageEventJSON
	if err := json.Unmarshal([]byte(ev.Data), &m); err != nil {
		s.t.Fatal(err)
	}
	if m.Type != ev.Event {
		s.t.Fatalf("event: %q but data type %v", ev.Event, m.Type)
	}
	return m
}

type messageEventJSON struct {
	Type         string      `json:"type"`
	MessageID    string      `json:"messageId"`
	Status       string      `json:"status"`
	StatusReason *string     `json:"statusReason"`
	Message      messageJSON `json:"message"`
}

// TestEventsStreamCarriesMessages: a sent message's every status change
// (sent, delivered, read, as a worker records and announces them) and a
// received message reach the sender's event stream as message.status and
// message.received, with the message as the API shows it; another user's
// stream sees none of it, and an event forged on Redis naming another
// user's message (or a status it never had) shows nothing.
func TestEventsStreamCarriesMessages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *setup) { s.opts.Heartbeat = 100 * time.Millisecond })
	base := e.serve()
	ctx := context.Background()
	a, ta, wa := e.linkedUser(t)
	b := newUser()
	tb := e.token(b, false)
	var sb sessionJSON
	e.do(req{method: "POST", path: sessionPath, token: tb}).data(t, &sb)
	e.claim(t, sb.SessionID, "w2").connect(t, "15550002222", "Bob")

	sa, sbs := e.openStream(t, base, ta), e.openStream(t, base, tb)
	for _, s := range []*stream{sa, sbs} {
		if ev, _ := s.next(10 * time.Second); ev.Event != "status" { // the current state
			t.Fatalf("first event: %+v", ev)
		}
	}
	publish := func(typ string, m store.Message) {
		t.Helper()
		if err := e.bus.Publish(ctx, events.FromMessage(typ, m)); err != nil {
			t.Fatal(err)
		}
	}
	wantStatus := func(s *stream, id, status string) messageEventJSON {
		t.Helper()
		ev, _ := s.next(10 * time.Second)
		m := s.decodeMessage(ev)
		if ev.Event != events.TypeMessageStatus || m.MessageID != id || m.Status != status || m.Message.MessageID != id {
			t.Fatalf("got %s %+v, want message.status %s of %s", ev.Event, m, status, id)
		}
		return m
	}

	// A sends; the worker takes it, WhatsApp acks it, the phone receipts
	// it delivered, then read: one event each, in order.
	var sent messageJSON
	e.do(req{method: "POST", path: messagesPath, token: ta, body: sendBody("+15557654321", "Hello")}).data(t, &sent)
	next, _, _, err := e.store.NextOutbound(ctx, wa.fence, store.Pacing{}, time.Hour)
	if err != nil || next.ID != sent.MessageID {
		t.Fatalf("next outbound: %+v %v", next, err)
	}
	m, _, err := e.store.MarkSent(ctx, next.ID)
	if err != nil {
		t.Fatal(err)
	}
	publish(events.TypeMessageStatus, m)
	wantStatus(sa, sent.MessageID, "sent")
	for _, read := range []bool{false, true} {
		moved, err := e.store.ApplyReceipt(ctx, sent.SessionID, []string{sent.WAMessageID}, read)
		if err != nil || len(moved) != 1 {
			t.Fatalf("receipt: %v %v", moved, err)
		}
		publish(events.TypeMessageStatus, moved[0])
	}
	wantStatus(sa, sent.MessageID, "delivered")
	if got := wantStatus(sa, sent.MessageID, "read"); got.Message.Status != "read" || got.Message.Text != "Hello" {
		t.Fatalf("the message in the read event: %+v", got.Message)
	}

	// A text arrives for A.
	in, _, err := e.store.SaveInbound(ctx, store.Inbound{SessionID: sent.SessionID, UserID: a, Chat: "+15557654321",
		Text: "Hi Ann", WAMessageID: "3EB0AAAA", Timestamp: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	publish(events.TypeMessageReceived, in)
	ev, _ := sa.next(10 * time.Second)
	if got := sa.decodeMessage(ev); ev.Event != events.TypeMessageReceived || got.MessageID != in.ID ||
		got.Status != "received" || got.Message.Text != "Hi Ann" || got.Message.Direction != "in" || got.Message.Chat != "+15557654321" {
		t.Fatalf("received: %s %+v", ev.Event, got)
	}

	// Forged on Redis: A's message announced on B's channel, and a status
	// A's message never had. Neither shows; B's own marker comes next.
	forged := events.FromMessage(events.TypeMessageStatus, m)
	forged.UserID = b
	if err := e.bus.Publish(ctx, forged); err != nil {
		t.Fatal(err)
	}
	never := events.FromMessage(events.TypeMessageStatus, m)
	never.Status = "failed"
	if err := e.bus.Publish(ctx, never); err != nil {
		t.Fatal(err)
	}
	var bm messageJSON
	e.do(req{method: "POST", path: messagesPath, token: tb, body: sendBody("+15557654321", "B's")}).data(t, &bm)
	bMsg, err := e.store.FailOutbound(ctx, bm.MessageID, store.ReasonNotOnWhatsApp)
	if err != nil {
		t.Fatal(err)
	}
	publish(events.TypeMessageStatus, bMsg)
	if got := wantStatus(sbs, bm.MessageID, "failed"); store.Str(got.StatusReason) != store.ReasonNotOnWhatsApp {
		t.Fatalf("B's failed event: %+v", got)
	}
	// And A's marker: after the forged ones, A's next event is its own.
	in2, _, err := e.store.SaveInbound(ctx, store.Inbound{SessionID: sent.SessionID, UserID: a, Chat: "+15557654321",
		Text: "again", WAMessageID: "3EB0BBBB", Timestamp: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	publish(events.TypeMessageReceived, in2)
	if ev, _ := sa.next(10 * time.Second); sa.decodeMessage(ev).MessageID != in2.ID {
		t.Fatalf("A's next event after the forged ones: %+v", ev)
	}
}
