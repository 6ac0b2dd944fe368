package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"wasessions/internal/store"
	"wasessions/internal/testfactory"
	"wasessions/tasks"
)

const messagesPath = "/api/integrations/whatsapp/messages"

type messageJSON struct {
	MessageID    string  `json:"messageId"`
	SessionID    string  `json:"sessionId"`
	Direction    string  `json:"direction"`
	Chat         string  `json:"chat"`
	Text         string  `json:"text"`
	Status       string  `json:"status"`
	StatusReason *string `json:"statusReason"`
	WAMessageID  string  `json:"waMessageId"`
	History      []struct {
		Status string `json:"status"`
	} `json:"history"`
}

// linkedUser makes a user whose session a worker ("w1") hosts, connected.
func (e *env) linkedUser(t *testing.T) (userID, token string, w *worker) {
	t.Helper()
	userID = newUser()
	tok := e.token(userID, false)
	var s sessionJSON
	e.do(req{method: "POST", path: sessionPath, token: tok}).data(t, &s)
	w = e.claim(t, s.SessionID, "w1")
	w.connect(t, "15550001234", "Ann")
	return userID, tok, w
}

func sendBody(to, text string) []byte {
	b, _ := json.Marshal(map[string]string{"to": to, "text": text})
	return b
}

func TestSendMessageBadInput(t *testing.T) {
	e := newEnv(t)
	_, tok, _ := e.linkedUser(t)
	cases := []struct {
		name   string
		body   string
		header map[string]string
		status int
		code   string
	}{
		{"not E.164", `{"to":"5557654321","text":"hi"}`, nil, 400, "invalid_phone_number"},
		{"letters in number", `{"to":"+1555abc4321","text":"hi"}`, nil, 400, "invalid_phone_number"},
		{"number missing", `{"text":"hi"}`, nil, 400, "invalid_phone_number"},
		{"number not a string", `{"to":15557654321,"text":"hi"}`, nil, 400, "invalid_phone_number"},
		{"empty text", `{"to":"+15557654321","text":""}`, nil, 400, "invalid_text"},
		{"blank text", `{"to":"+15557654321","text":"  \n "}`, nil, 400, "invalid_text"},
		{"text missing", `{"to":"+15557654321"}`, nil, 400, "invalid_text"},
		{"text over 4096", string(sendBody("+15557654321", strings.Repeat("é", 4097))), nil, 400, "invalid_text"},
		{"unknown field", `{"to":"+15557654321","text":"hi","media":"x"}`, nil, 400, "invalid_request"},
		{"not JSON", `{"to":`, nil, 400, "invalid_json"},
		{"two objects", `{"to":"+15557654321","text":"hi"}{}`, nil, 400, "invalid_json"},
		{"array", `[]`, nil, 400, "invalid_request"},
		{"empty body", ``, nil, 400, "invalid_json"},
		{"form body", `to=1`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"},
		{"key too long", `{"to":"+15557654321","text":"hi"}`, map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}, 400, "invalid_idempotency_key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.do(req{method: "POST", path: messagesPath, token: tok, body: []byte(c.body), header: c.header}).wantError(t, c.status, c.code)
		})
	}
	// Nothing half-written: not one message exists.
	var list struct {
		Messages []messageJSON `json:"messages"`
	}
	e.do(req{method: "GET", path: messagesPath, token: tok}).data(t, &list)
	if len(list.Messages) != 0 {
		t.Fatalf("bad requests left %d messages", len(list.Messages))
	}
	// Exactly 4096 characters is fine.
	r := e.do(req{method: "POST", path: messagesPath, token: tok, body: sendBody("+15557654321", strings.Repeat("é", 4096))})
	if r.Status != http.StatusAccepted {
		t.Fatalf("4096 characters: %d %s", r.Status, r.Body)
	}
}

func TestSendMessageNeedsALinkedSession(t *testing.T) {
	e := newEnv(t)
	body := sendBody("+15557654321", "hi")
	// No session at all.
	e.do(req{method: "POST", path: messagesPath, token: e.token(newUser(), false), body: body}).wantError(t, 409, "session_not_linked")
	// A session still showing its QR.
	u := newUser()
	tok := e.token(u, false)
	var s sessionJSON
	e.do(req{method: "POST", path: sessionPath, token: tok}).data(t, &s)
	w := e.claim(t, s.SessionID, "w1")
	w.showQR(t, "2@qr")
	e.do(req{method: "POST", path: messagesPath, token: tok, body: body}).wantError(t, 409, "session_not_linked")
	// Linked, then reconnecting (e.g. being handed over): accepted, waits.
	w.connect(t, "15550001234", "Ann")
	if _, err := e.store.Release(context.Background(), w.fence, "worker_shutdown", ""); err != nil {
		t.Fatal(err)
	}
	var m messageJSON
	r := e.do(req{method: "POST", path: messagesPath, token: tok, body: body})
	if r.Status != http.StatusAccepted {
		t.Fatalf("reconnecting session: %d %s", r.Status, r.Body)
	}
	r.data(t, &m)
	if m.Status != "queued" || m.Direction != "out" || m.Chat != "+15557654321" || m.WAMessageID == "" {
		t.Fatalf("queued message = %+v", m)
	}
	// No host: nothing is enqueued now; the next host drains the outbox.
	if n := len(e.pendingTasks(testfactory.WorkerQueue(t, "w1"))); n != 0 {
		t.Fatalf("%d wake-ups for a session nobody hosts", n)
	}
}

func TestSendMessageQueuesAndWakesTheHost(t *testing.T) {
	e := newEnv(t)
	_, tok, w := e.linkedUser(t)
	var m messageJSON
	r := e.do(req{method: "POST", path: messagesPath, token: tok, body: sendBody("+15557654321", "Hello")})
	if r.Status != http.StatusAccepted {
		t.Fatalf("send: %d %s", r.Status, r.Body)
	}
	r.data(t, &m)
	pending := e.pendingTasks(testfactory.WorkerQueue(t, w.id))
	if len(pending) != 1 || pending[0].Type != tasks.TypeMessagesSend {
		t.Fatalf("host's queue = %v, want one %s", pending, tasks.TypeMessagesSend)
	}
	p, err := tasks.ParseSend(taskOf(pending[0]))
	if err != nil || p.SessionID != m.SessionID || p.MessageID != m.MessageID {
		t.Fatalf("wake-up payload %+v %v", p, err)
	}

	// The worker sends it and WhatsApp receipts it: the API shows each step.
	ctx := context.Background()
	next, _, _, err := e.store.NextOutbound(ctx, w.fence, store.Pacing{}, time.Hour)
	if err != nil || next.ID != m.MessageID {
		t.Fatalf("next outbound: %+v %v", next, err)
	}
	if _, _, err := e.store.MarkSent(ctx, next.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.ApplyReceipt(ctx, m.SessionID, []string{m.WAMessageID}, false); err != nil {
		t.Fatal(err)
	}
	var got messageJSON
	e.do(req{method: "GET", path: messagesPath + "/" + m.MessageID, token: tok}).data(t, &got)
	var hist []string
	for _, h := range got.History {
		hist = append(hist, h.Status)
	}
	if got.Status != "delivered" || fmt.Sprint(hist) != "[queued sent delivered]" {
		t.Fatalf("message = %s, history %v", got.Status, hist)
	}

	// Another user: 404, as for an unknown or malformed id.
	other := e.token(newUser(), false)
	for _, id := range []string{m.MessageID, uuid.NewString(), "not-a-uuid"} {
		e.do(req{method: "GET", path: messagesPath + "/" + id, token: other}).wantError(t, 404, "message_not_found")
	}
	var list struct {
		Messages []messageJSON `json:"messages"`
	}
	e.do(req{method: "GET", path: messagesPath, token: other}).data(t, &list)
	if len(list.Messages) != 0 {
		t.Fatalf("another user lists %d messages", len(list.Messages))
	}
}

func TestSendMessageIdempotencyUnderConcurrentRetries(t *testing.T) {
	e := newEnv(t)
	_, tok, w := e.linkedUser(t)
	base := e.serve()
	const n = 20
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ids      = map[string]bool{}
		statuses = map[int]int{}
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := e.doHTTP(base, req{method: "POST", path: messagesPath, token: tok, body: sendBody("+15557654321", "once"),
				header: map[string]string{"Idempotency-Key": "order-42"}})
			var m messageJSON
			r.data(t, &m)
			mu.Lock()
			ids[m.MessageID] = true
			statuses[r.Status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(ids) != 1 || statuses[http.StatusAccepted] != 1 || statuses[http.StatusOK] != n-1 {
		t.Fatalf("%d concurrent POSTs with one key: %d messages, statuses %v; want 1 message, one 202 and %d 200s", n, len(ids), statuses, n-1)
	}
	if got := len(e.pendingTasks(testfactory.WorkerQueue(t, w.id))); got != 1 {
		t.Fatalf("%d wake-ups, want 1", got)
	}
	// The same key for another text: 422, nothing queued.
	e.do(req{method: "POST", path: messagesPath, token: tok, body: sendBody("+15557654321", "twice"),
		header: map[string]string{"Idempotency-Key": "order-42"}}).wantError(t, 422, "idempotency_key_reused")
}

func TestListMessagesFiltersAndPages(t *testing.T) {
	e := newEnv(t)
	userID, tok, w := e.linkedUser(t)
	ctx := context.Background()
	for i := range 5 {
		e.do(req{method: "POST", path: messagesPath, token: tok, body: sendBody("+15550000001", fmt.Sprint("out", i))})
	}
	for i := range 3 {
		if _, _, err := e.store.SaveInbound(ctx, store.Inbound{SessionID: w.fence.SessionID, UserID: userID, Chat: "+15550000002",
			Text: fmt.Sprint("in", i), WAMessageID: fmt.Sprint("IN", i), Timestamp: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	page := func(q string) ([]string, *string) {
		var l struct {
			Messages   []messageJSON `json:"messages"`
			NextCursor *string       `json:"nextCursor"`
		}
		e.do(req{method: "GET", path: messagesPath + q, token: tok}).data(t, &l)
		var texts []string
		for _, m := range l.Messages {
			texts = append(texts, m.Text)
		}
		return texts, l.NextCursor
	}
	if got, next := page("?direction=in"); fmt.Sprint(got) != "[in2 in1 in0]" || next != nil {
		t.Fatalf("direction=in: %v next %v", got, next)
	}
	got, next := page("?direction=out&chat=%2B15550000001&limit=3")
	if fmt.Sprint(got) != "[out4 out3 out2]" || next == nil {
		t.Fatalf("first page: %v next %v", got, next)
	}
	if got, next2 := page("?direction=out&limit=3&cursor=" + *next); fmt.Sprint(got) != "[out1 out0]" || next2 != nil {
		t.Fatalf("second page: %v next %v", got, next2)
	}
	for _, q := range []struct{ q, code string }{
		{"?direction=sideways", "invalid_direction"},
		{"?chat=12345", "invalid_phone_number"},
		{"?limit=0", "invalid_limit"},
		{"?limit=101", "invalid_limit"},
		{"?cursor=%21%21", "invalid_cursor"},
	} {
		e.do(req{method: "GET", path: messagesPath + q.q, token: tok}).wantError(t, 400, q.code)
	}
	e.do(req{method: "GET", path: messagesPath}).wantError(t, 401, "token_missing")
}
