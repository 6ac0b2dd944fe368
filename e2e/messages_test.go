package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"wasessions/e2e/harness"
)

const pathMessages = "/api/integrations/whatsapp/messages"

// message is the API's message view.
type message struct {
	MessageID    string     `json:"messageId"`
	SessionID    string     `json:"sessionId"`
	Direction    string     `json:"direction"`
	Chat         string     `json:"chat"`
	Text         string     `json:"text"`
	Status       string     `json:"status"`
	StatusReason *string    `json:"statusReason"`
	WAMessageID  string     `json:"waMessageId"`
	SentAt       *time.Time `json:"sentAt"`
	History      []struct {
		Status string    `json:"status"`
		At     time.Time `json:"at"`
	} `json:"history"`
}

// sendMessage is POST /messages as user; key is the Idempotency-Key ("" for none).
func (c *apiClient) sendMessage(user, to, text, key string) (message, response, error) {
	var m message
	var r response
	body, _ := json.Marshal(map[string]string{"to": to, "text": text})
	req, err := http.NewRequest("POST", c.base+pathMessages, bytes.NewReader(body))
	if err != nil {
		return m, r, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token(user, false))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return m, r, fmt.Errorf("POST %s: %w", pathMessages, err)
	}
	defer resp.Body.Close()
	r.Status = resp.StatusCode
	r.Body, _ = io.ReadAll(resp.Body)
	if err := json.Unmarshal(r.Body, &r.Env); err != nil {
		return m, r, fmt.Errorf("POST %s: %d, not an envelope: %q", pathMessages, r.Status, r.Body)
	}
	if r.Status != http.StatusAccepted && r.Status != http.StatusOK {
		return m, r, fmt.Errorf("POST %s: %s", pathMessages, r)
	}
	return m, r, json.Unmarshal(r.Env.Data, &m)
}

// allMessages pages through GET /messages with query q (newest first).
func (c *apiClient) allMessages(user, q string) ([]message, error) {
	var out []message
	cursor := ""
	for {
		path := pathMessages + "?limit=100" + q
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		var page struct {
			Messages   []message `json:"messages"`
			NextCursor *string   `json:"nextCursor"`
		}
		if _, err := c.data("GET", path, user, false, http.StatusOK, &page); err != nil {
			return nil, err
		}
		out = append(out, page.Messages...)
		if page.NextCursor == nil {
			return out, nil
		}
		cursor = *page.NextCursor
	}
}

func (c *apiClient) message(user, id string) (message, error) {
	var m message
	_, err := c.data("GET", pathMessages+"/"+id, user, false, http.StatusOK, &m)
	return m, err
}

// messageEvent is the data of a message.* event on the events stream.
type messageEvent struct {
	Type      string  `json:"type"`
	MessageID string  `json:"messageId"`
	Status    string  `json:"status"`
	Message   message `json:"message"`
}

// eventLog is an open events stream of one user, collecting its message
// events as they come.
type eventLog struct {
	mu   sync.Mutex
	msgs []messageEvent
}

// streamEvents opens GET /events as user and collects its message.*
// events until the test ends.
func (s *stack) streamEvents(user string) *eventLog {
	s.T.Helper()
	req, err := http.NewRequest("GET", s.client.base+pathEvents, nil)
	if err != nil {
		s.T.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.client.token(user, false))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.T.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		s.T.Fatalf("GET %s: %d", pathEvents, resp.StatusCode)
	}
	s.T.Cleanup(func() { resp.Body.Close() })
	l := &eventLog{}
	first := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var typ string
		subscribed := false
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				typ = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				if typ == "status" && !subscribed {
					close(first) // the current state: the stream is subscribed
					subscribed = true
				}
				if strings.HasPrefix(typ, "message.") {
					var e messageEvent
					if err := json.Unmarshal([]byte(line[len("data: "):]), &e); err == nil {
						l.mu.Lock()
						l.msgs = append(l.msgs, e)
						l.mu.Unlock()
					}
				}
			}
		}
	}()
	select {
	case <-first:
	case <-time.After(harness.WaitLong):
		s.T.Fatal("the events stream sent no current state")
	}
	return l
}

// of is what the stream showed of one message: its events' types and
// statuses, in order ("message.status:sent", ...).
func (l *eventLog) of(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.msgs {
		if e.MessageID == id {
			out = append(out, e.Type+":"+e.Status)
		}
	}
	return out
}

func (l *eventLog) all() []messageEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]messageEvent(nil), l.msgs...)
}

// The emulator's peer phones.

type peer struct {
	JID   string `json:"jid"`
	Phone string `json:"phone"`
}

type inboxMessage struct {
	ID    string    `json:"id"`
	Text  string    `json:"text"`
	At    time.Time `json:"at"`
	Count int       `json:"count"`
}

type msgStats struct {
	MessagesIn        int64 `json:"messages_in"`
	MessagesOut       int64 `json:"messages_out"`
	DuplicateMessages int64 `json:"duplicate_messages"`
	DecryptFailures   int64 `json:"decrypt_failures"`
	RejectedMessages  int64 `json:"rejected_messages"`
}

func (c *emuClient) addPeer(phone, name string) (peer, error) {
	var p peer
	req := map[string]string{"phone": phone, "name": name}
	if _, err := c.Call("POST", "/peers", req, &p, http.StatusCreated); err != nil {
		return p, err
	}
	return p, nil
}

func (c *emuClient) inbox(jid string) ([]inboxMessage, error) {
	var r struct {
		Messages []inboxMessage `json:"messages"`
	}
	_, err := c.Call("GET", "/peers/"+url.PathEscape(jid)+"/inbox", nil, &r, http.StatusOK)
	return r.Messages, err
}

// peerSend has a peer send text to a linked account; it returns the id.
func (c *emuClient) peerSend(jid, to, text string) (string, error) {
	var r struct {
		ID string `json:"id"`
	}
	_, err := c.Call("POST", "/peers/"+url.PathEscape(jid)+"/send", map[string]string{"to": to, "text": text}, &r, http.StatusOK)
	return r.ID, err
}

func (c *emuClient) msgStats() (msgStats, error) {
	var s msgStats
	_, err := c.Call("GET", "/stats", nil, &s, http.StatusOK)
	return s, err
}

func (s *stack) peer(phone, name string) peer {
	s.T.Helper()
	p, err := s.phone.addPeer(phone, name)
	if err != nil {
		s.T.Fatal(err)
	}
	return p
}

// waitInbox waits until the peer's inbox holds n messages and returns it.
func (s *stack) waitInbox(p peer, n int, within time.Duration) []inboxMessage {
	s.T.Helper()
	var got []inboxMessage
	s.WaitFor(fmt.Sprintf("%d messages in %s's inbox", n, p.Phone), within, func() (bool, string) {
		var err error
		got, err = s.phone.inbox(p.JID)
		return err == nil && len(got) >= n, fmt.Sprintf("%d messages, %v", len(got), err)
	})
	return got
}

// waitStatus waits until the user's message has status want.
func (s *stack) waitStatus(user, id, want string, within time.Duration) message {
	s.T.Helper()
	var m message
	s.WaitFor("message "+id+" "+want, within, func() (bool, string) {
		var err error
		m, err = s.client.message(user, id)
		return err == nil && m.Status == want, fmt.Sprintf("status %s reason %s %v", m.Status, str(m.StatusReason), err)
	})
	return m
}

// TestMessagesSendAndReceive: a text sent through the API reaches the
// peer's phone once and ends delivered, then read; a text from the peer is
// stored once and listed; 20 concurrent POSTs with one Idempotency-Key are
// one message and one send; a number not on WhatsApp fails with
// not_on_whatsapp.
func TestMessagesSendAndReceive(t *testing.T) {
	s := newStack(t, stackOpts{Env: map[string]string{"SEND_RATE": "0"}})
	alice := s.peer("+15557654321", "Alice")
	u := newUser()
	s.link(u, "+15550001234", "Ann")
	// Ann's events stream, and another linked user's.
	evs := s.streamEvents(u)
	other := newUser()
	s.link(other, "+15550001299", "Oz")
	otherEvs := s.streamEvents(other)

	m, r, err := s.client.sendMessage(u, alice.Phone, "Hello Alice", "")
	if err != nil || r.Status != http.StatusAccepted || m.Status != "queued" {
		t.Fatalf("send: %+v %s %v", m, r, err)
	}
	got := s.waitInbox(alice, 1, harness.WaitLong)
	if got[0].ID != m.WAMessageID || got[0].Text != "Hello Alice" || got[0].Count != 1 {
		t.Fatalf("Alice's inbox: %+v, want the text once with id %s", got, m.WAMessageID)
	}
	d := s.waitStatus(u, m.MessageID, "delivered", harness.WaitLong)
	if d.SentAt == nil {
		t.Fatalf("delivered without sentAt: %+v", d)
	}
	if _, err := s.phone.Call("POST", "/peers/"+url.PathEscape(alice.JID)+"/read", map[string][]string{"ids": {m.WAMessageID}}, nil, http.StatusOK); err != nil {
		t.Fatal(err)
	}
	s.waitStatus(u, m.MessageID, "read", harness.WaitLong)

	// Alice answers: stored once, listed as received.
	id, err := s.phone.peerSend(alice.JID, "+15550001234", "Hi Ann")
	if err != nil {
		t.Fatal(err)
	}
	var in []message
	s.WaitFor("Alice's answer listed", harness.WaitLong, func() (bool, string) {
		in, err = s.client.allMessages(u, "&direction=in")
		return err == nil && len(in) == 1, fmt.Sprint(len(in), err)
	})
	if in[0].WAMessageID != id || in[0].Text != "Hi Ann" || in[0].Chat != alice.Phone || in[0].Status != "received" {
		t.Fatalf("received: %+v, want id %s from %s", in[0], id, alice.Phone)
	}

	// Ann's events stream showed each status her message went through
	// (its history after queued: sent, delivered, read, unless the
	// delivery receipt overtook the ack), in order, and Alice's answer
	// with its text; the other user's stream showed none of it.
	full, err := s.client.message(u, m.MessageID)
	if err != nil {
		t.Fatal(err)
	}
	var hist []string
	for _, h := range full.History[1:] {
		hist = append(hist, "message.status:"+h.Status)
	}
	if want := fmt.Sprint(hist); want != "[message.status:sent message.status:delivered message.status:read]" &&
		want != "[message.status:delivered message.status:read]" {
		t.Fatalf("history of the sent message: %+v", full.History)
	}
	s.WaitFor("the stream's events of the sent message", harness.WaitLong, func() (bool, string) {
		got := fmt.Sprint(evs.of(m.MessageID))
		return got == fmt.Sprint(hist), got
	})
	s.WaitFor("the stream's message.received", harness.WaitLong, func() (bool, string) {
		got := evs.of(in[0].MessageID)
		return fmt.Sprint(got) == "[message.received:received]", fmt.Sprint(got)
	})
	for _, e := range evs.all() {
		if e.MessageID == in[0].MessageID && (e.Message.Text != "Hi Ann" || e.Message.Chat != alice.Phone) {
			t.Fatalf("message.received shows %+v", e.Message)
		}
	}
	if got := otherEvs.all(); len(got) != 0 {
		t.Fatalf("another user's stream showed Ann's messages: %+v", got)
	}

	// 20 concurrent POSTs with one key: one message, one send.
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		ids = map[string]int{}
	)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, _, err := s.client.sendMessage(u, alice.Phone, "only once", "retry-key-1")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("idempotent send: %v", err)
				return
			}
			ids[m.MessageID]++
		}()
	}
	wg.Wait()
	if len(ids) != 1 {
		t.Fatalf("20 POSTs with one Idempotency-Key made %d messages", len(ids))
	}
	for id := range ids {
		s.waitStatus(u, id, "delivered", harness.WaitLong)
	}
	got = s.waitInbox(alice, 2, harness.WaitLong)
	if len(got) != 2 || got[1].Text != "only once" || got[1].Count != 1 {
		t.Fatalf("Alice's inbox after the retries: %+v", got)
	}

	// A number that is not on WhatsApp.
	bad, _, err := s.client.sendMessage(u, "+15559999999", "anyone?", "")
	if err != nil {
		t.Fatal(err)
	}
	f := s.waitStatus(u, bad.MessageID, "failed", harness.WaitLong)
	if str(f.StatusReason) != "not_on_whatsapp" {
		t.Fatalf("failed with %q, want not_on_whatsapp", str(f.StatusReason))
	}
	st, err := s.phone.msgStats()
	if err != nil || st.DuplicateMessages != 0 || st.DecryptFailures != 0 || st.RejectedMessages != 0 {
		t.Fatalf("emulator: %+v %v; want no duplicate, decrypt failure or rejection", st, err)
	}
}

// e2eMessages is how many messages the crash tests send: 60 in make test;
// E2E_MESSAGES=500 for the full figure (make test-messages).
func e2eMessages(t *testing.T) int {
	if v := os.Getenv("E2E_MESSAGES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 3 {
			t.Fatalf("E2E_MESSAGES=%q: want a number of at least 3", v)
		}
		return n
	}
	return 60
}

// TestMessagesExactlyOnceAcrossCrashes: messages to three peers while the
// hosting worker is SIGKILLed and later the next host is SIGTERMed: every
// message is in its peer's inbox exactly once (count 1), in the order the
// API accepted it, and ends delivered; the emulator counts no duplicate.
// Then messages from the peers while the host is SIGKILLed: each is listed
// exactly once, none missing.
func TestMessagesExactlyOnceAcrossCrashes(t *testing.T) {
	n := e2eMessages(t)
	// Pacing and the per-user send limit off: the test accepts n messages
	// as fast as the API takes them.
	s := newStack(t, stackOpts{Workers: []string{"w1", "w2"}, Env: map[string]string{"SEND_RATE": "0", "RATE_LIMIT_SEND": "off"}})
	peers := []peer{s.peer("+15557000001", "P1"), s.peer("+15557000002", "P2"), s.peer("+15557000003", "P3")}
	u := newUser()
	l := s.link(u, "+15550002222", "Bo")

	// Accept n messages, round robin over the peers, in one goroutine so
	// the API's acceptance order is the order below.
	want := map[string][]string{} // peer JID -> texts in acceptance order
	ids := make([]string, 0, n)
	sent := make(chan int, n)
	go func() {
		defer close(sent)
		for i := range n {
			p := peers[i%len(peers)]
			text := fmt.Sprintf("msg %04d to %s", i, p.Phone)
			m, _, err := s.client.sendMessage(u, p.Phone, text, "")
			if err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
			ids = append(ids, m.MessageID)
			want[p.JID] = append(want[p.JID], text)
			sent <- i
		}
	}()
	// A third of the way: SIGKILL the host. Two thirds: SIGTERM the next.
	for i := range sent {
		if i == n/3 {
			host := str(s.Row(l.sessionID).WorkerID)
			t.Logf("after %d accepted: SIGKILL %s", i+1, host)
			s.Workers[host].Signal(syscall.SIGKILL)
			s.Workers[host].Kill()
			s.StartWorker(host)
		}
		if i == 2*n/3 {
			host := ""
			s.WaitFor("the session hosted again", harness.WaitLong, func() (bool, string) {
				r := s.Row(l.sessionID)
				host = str(r.WorkerID)
				return r.LeaseLive && r.Status == "connected", string(r.Status)
			})
			t.Logf("after %d accepted: SIGTERM %s", i+1, host)
			done := s.Workers[host].Signal(syscall.SIGTERM)
			s.Workers[host].WaitExit(done, harness.WaitLong)
			s.StartWorker(host)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, p := range peers {
		got := s.waitInbox(p, len(want[p.JID]), 3*harness.WaitLong)
		var texts []string
		for _, m := range got {
			if m.Count != 1 {
				t.Errorf("%s: %q arrived %d times", p.Phone, m.Text, m.Count)
			}
			texts = append(texts, m.Text)
		}
		if fmt.Sprint(texts) != fmt.Sprint(want[p.JID]) {
			t.Errorf("%s's inbox, in order:\n got %v\nwant %v", p.Phone, texts, want[p.JID])
		}
	}
	s.WaitFor("every message delivered in the API", 2*harness.WaitLong, func() (bool, string) {
		all, err := s.client.allMessages(u, "&direction=out")
		if err != nil {
			return false, err.Error()
		}
		counts := map[string]int{}
		for _, m := range all {
			counts[m.Status]++
		}
		return len(all) == n && counts["delivered"] == n, fmt.Sprint(counts)
	})

	// Inbound: the peers send while the host is SIGKILLed.
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		inbound = map[string]bool{}
	)
	for pi, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := pi; i < n; i += len(peers) {
				id, err := s.phone.peerSend(p.JID, "+15550002222", fmt.Sprintf("reply %04d", i))
				if err != nil {
					t.Errorf("peer send: %v", err)
					return
				}
				mu.Lock()
				inbound[id] = true
				mu.Unlock()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	host := str(s.Row(l.sessionID).WorkerID)
	t.Logf("inbound under way: SIGKILL %s", host)
	s.Workers[host].Signal(syscall.SIGKILL)
	s.Workers[host].Kill()
	s.StartWorker(host)
	wg.Wait()
	var listed []message
	s.WaitFor("every inbound message listed", 3*harness.WaitLong, func() (bool, string) {
		var err error
		listed, err = s.client.allMessages(u, "&direction=in")
		return err == nil && len(listed) >= n, fmt.Sprint(len(listed), err)
	})
	seen := map[string]int{}
	for _, m := range listed {
		seen[m.WAMessageID]++
	}
	var missing, doubled []string
	for id := range inbound {
		if seen[id] == 0 {
			missing = append(missing, id)
		}
	}
	for id, c := range seen {
		if c > 1 || !inbound[id] {
			doubled = append(doubled, id)
		}
	}
	sort.Strings(missing)
	if len(listed) != n || len(missing) > 0 || len(doubled) > 0 {
		t.Fatalf("inbound: %d listed for %d sent; missing %v; doubled or unknown %v", len(listed), n, missing, doubled)
	}
	st, err := s.phone.msgStats()
	if err != nil || st.DuplicateMessages != 0 || st.DecryptFailures != 0 {
		t.Fatalf("emulator: %+v %v; want no duplicate and no decrypt failure", st, err)
	}
	t.Logf("FIGURE %d out (3 peers) across SIGKILL+SIGTERM and %d in across SIGKILL: each exactly once, in order; emulator %+v", n, n, st)
}

// TestMessagesPacingHoldsAcrossHandoff: with SEND_RATE 30/min and a burst
// of 2, the peer receives the messages no faster than the bucket allows,
// also around a graceful handoff to another worker in the middle (a bucket
// kept in worker memory would start full again there).
func TestMessagesPacingHoldsAcrossHandoff(t *testing.T) {
	const (
		rate  = 30.0 // per minute
		burst = 2
		n     = 7
	)
	s := newStack(t, stackOpts{Workers: []string{"w1", "w2"},
		Env: map[string]string{"SEND_RATE": "30", "SEND_BURST": strconv.Itoa(burst), "REBALANCE_MAX_MOVES": "0"}})
	p := s.peer("+15557100001", "Paced")
	u := newUser()
	l := s.link(u, "+15550003333", "Cy")
	for i := range n {
		if _, _, err := s.client.sendMessage(u, p.Phone, fmt.Sprintf("paced %d", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	s.waitInbox(p, 3, harness.WaitLong)
	host := str(s.Row(l.sessionID).WorkerID)
	t.Logf("3 received: SIGTERM %s (graceful handoff)", host)
	done := s.Workers[host].Signal(syscall.SIGTERM)
	s.Workers[host].WaitExit(done, harness.WaitLong)
	got := s.waitInbox(p, n, 2*harness.WaitLong)
	for i, m := range got {
		if m.Text != fmt.Sprintf("paced %d", i) || m.Count != 1 {
			t.Fatalf("inbox[%d] = %+v", i, m)
		}
	}
	// Between any two sends i < j (each send starts when the sender takes
	// its token, recorded by Postgres' clock as last_attempt_at), at most
	// burst + rate·Δt messages: the token bucket, whichever worker sent.
	rows, err := s.DB.Pool().Query(context.Background(), `SELECT last_attempt_at FROM messages
		WHERE user_id = $1 AND direction = 'out' ORDER BY seq`, u)
	if err != nil {
		t.Fatal(err)
	}
	takes, err := pgx.CollectRows(rows, pgx.RowTo[time.Time])
	if err != nil || len(takes) != n {
		t.Fatalf("send times: %d, %v", len(takes), err)
	}
	perSec := rate / 60
	for i := range takes {
		for j := i + 1; j < len(takes); j++ {
			dt := takes[j].Sub(takes[i]).Seconds()
			if float64(j-i+1) > burst+perSec*dt+0.01 {
				t.Errorf("sends %d..%d (%d) within %.2fs: faster than %v/min with a burst of %d", i, j, j-i+1, dt, rate, burst)
			}
		}
	}
	var sends []string
	for i := 1; i < len(takes); i++ {
		sends = append(sends, takes[i].Sub(takes[i-1]).Round(10*time.Millisecond).String())
	}
	t.Logf("FIGURE gaps between sends at SEND_RATE=30/min burst 2, handoff after the third: %v", sends)
	var gaps []string
	for i := 1; i < len(got); i++ {
		gaps = append(gaps, got[i].At.Sub(got[i-1].At).Round(10*time.Millisecond).String())
	}
	t.Logf("gaps between arrivals at the peer (network and processing noise included): %v", gaps)
}

// TestMessagesExpireAndSessionEnded: a message that waits longer than
// MESSAGE_TTL (here behind a pacing of one a minute) fails as expired; a
// session unlinked on the phone while messages wait fails them as
// session_ended.
func TestMessagesExpireAndSessionEnded(t *testing.T) {
	s := newStack(t, stackOpts{Env: map[string]string{"SEND_RATE": "1", "SEND_BURST": "1", "MESSAGE_TTL": "8s"}})
	p := s.peer("+15557200001", "Late")

	// Expiry: the first goes, the next waits a minute for its token.
	u := newUser()
	s.link(u, "+15550004444", "Di")
	first, _, err := s.client.sendMessage(u, p.Phone, "first", "")
	if err != nil {
		t.Fatal(err)
	}
	s.waitStatus(u, first.MessageID, "delivered", harness.WaitLong)
	late, _, err := s.client.sendMessage(u, p.Phone, "too late", "")
	if err != nil {
		t.Fatal(err)
	}
	m := s.waitStatus(u, late.MessageID, "failed", harness.WaitLong)
	if str(m.StatusReason) != "expired" {
		t.Fatalf("waiting message failed with %q, want expired", str(m.StatusReason))
	}

	// Unlinked while messages wait.
	v := newUser()
	lv := s.link(v, "+15550005555", "Ed")
	go1, _, err := s.client.sendMessage(v, p.Phone, "goes", "")
	if err != nil {
		t.Fatal(err)
	}
	s.waitStatus(v, go1.MessageID, "delivered", harness.WaitLong)
	waiting, _, err := s.client.sendMessage(v, p.Phone, "never", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.phone.Unlink(lv.jid); err != nil {
		t.Fatal(err)
	}
	m = s.waitStatus(v, waiting.MessageID, "failed", harness.WaitLong)
	if str(m.StatusReason) != "session_ended" {
		t.Fatalf("message of an unlinked session failed with %q, want session_ended", str(m.StatusReason))
	}
	// And a new send is refused: nothing linked.
	if _, r, _ := s.client.sendMessage(v, p.Phone, "after", ""); r.Status != http.StatusConflict || r.code() != "session_not_linked" {
		t.Fatalf("send after unlink: %s, want 409 session_not_linked", r)
	}
	inbox, _ := s.phone.inbox(p.JID)
	if len(inbox) != 2 {
		t.Fatalf("peer received %d messages, want only the two that went out: %+v", len(inbox), inbox)
	}
}

// e2eFigureMessages is how many messages TestMessagesThroughput sends in
// each phase: 12 in make test; E2E_MESSAGES for the figures of
// docs/BENCHMARKS.md (make bench-messages).
func e2eFigureMessages(t *testing.T) int {
	if os.Getenv("E2E_MESSAGES") != "" {
		return e2eMessages(t)
	}
	return 12
}

// pct is the p-th percentile of ds (sorted in place).
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	i := int(float64(len(ds))*p/100+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// checkInboxes asserts each peer's inbox holds want[peer] exactly once
// each, in order.
func (s *stack) checkInboxes(peers []peer, want map[string][]string) {
	s.T.Helper()
	for _, p := range peers {
		got := s.waitInbox(p, len(want[p.JID]), 3*harness.WaitLong)
		var texts []string
		for _, m := range got {
			if m.Count != 1 {
				s.T.Errorf("%s: %q arrived %d times", p.Phone, m.Text, m.Count)
			}
			texts = append(texts, m.Text)
		}
		if fmt.Sprint(texts) != fmt.Sprint(want[p.JID]) {
			s.T.Errorf("%s's inbox, in order:\n got %v\nwant %v", p.Phone, texts, want[p.JID])
		}
	}
}

// waitDelivered waits until the user's n outbound messages of ids are all
// delivered and returns them.
func (s *stack) waitDelivered(user string, ids map[string]bool) []message {
	s.T.Helper()
	var out []message
	s.WaitFor("every message delivered", 3*harness.WaitLong, func() (bool, string) {
		all, err := s.client.allMessages(user, "&direction=out")
		if err != nil {
			return false, err.Error()
		}
		out = out[:0]
		counts := map[string]int{}
		for _, m := range all {
			if ids[m.MessageID] {
				counts[m.Status]++
				out = append(out, m)
			}
		}
		return counts["delivered"] == len(ids), fmt.Sprint(counts)
	})
	return out
}

// TestMessagesThroughput: texts sent with pacing off reach three peers
// each exactly once and in order, whether the worker sends them as they
// are accepted or drains a backlog queued while no worker hosted the
// session (the session was handed back, linked: the sends waited, none
// failed); texts from the peers are each stored once. Along the way it
// logs the figures of docs/BENCHMARKS.md: POST /messages p50/p99, accepted
// → sent p50/p99, one worker's send throughput draining a backlog, and
// inbound commit → delivery receipt at the peer's phone p50/p99.
func TestMessagesThroughput(t *testing.T) {
	n := e2eFigureMessages(t)
	s := newStack(t, stackOpts{Env: map[string]string{"SEND_RATE": "0", "RATE_LIMIT_SEND": "off"}})
	peers := []peer{s.peer("+15557300001", "T1"), s.peer("+15557300002", "T2"), s.peer("+15557300003", "T3")}
	u := newUser()
	const phone = "+15550006666"
	l := s.link(u, phone, "Fi")
	want := map[string][]string{}
	send := func(phase string, i int) (message, time.Duration) {
		t.Helper()
		p := peers[i%len(peers)]
		text := fmt.Sprintf("%s %04d to %s", phase, i, p.Phone)
		start := time.Now()
		m, _, err := s.client.sendMessage(u, p.Phone, text, "")
		took := time.Since(start)
		if err != nil {
			t.Fatalf("send %s %d: %v", phase, i, err)
		}
		want[p.JID] = append(want[p.JID], text)
		return m, took
	}

	// 1. Live: each text accepted once the one before went out (so the
	// latency is the path's, not a queue's behind a faster client).
	ids := map[string]bool{}
	var posts, toSent []time.Duration
	for i := range n {
		m, took := send("live", i)
		ids[m.MessageID] = true
		posts = append(posts, took)
		var full message
		deadline := time.Now().Add(harness.WaitLong)
		for full.Status == "" || full.Status == "queued" {
			if time.Now().After(deadline) {
				t.Fatalf("message %d not sent within %s: %+v", i, harness.WaitLong, full)
			}
			time.Sleep(5 * time.Millisecond)
			var err error
			if full, err = s.client.message(u, m.MessageID); err != nil {
				t.Fatal(err)
			}
		}
		for _, h := range full.History {
			if h.Status == "sent" || h.Status == "delivered" { // the ack, or a receipt that overtook it
				toSent = append(toSent, h.At.Sub(full.History[0].At))
				break
			}
		}
	}
	s.waitDelivered(u, ids)
	s.checkInboxes(peers, want)

	// 2. Backlog: the only worker stops (graceful), n texts are accepted
	// meanwhile, and the worker drains them when it hosts the session again.
	host := str(s.Row(l.sessionID).WorkerID)
	done := s.Workers[host].Signal(syscall.SIGTERM)
	s.Workers[host].WaitExit(done, harness.WaitLong)
	backlog := map[string]bool{}
	for i := range n {
		m, _ := send("backlog", i)
		backlog[m.MessageID] = true
	}
	s.StartWorker(host)
	drained := s.waitDelivered(u, backlog)
	first, last := time.Time{}, time.Time{}
	for _, m := range drained {
		if m.SentAt == nil {
			t.Fatalf("delivered without sentAt: %+v", m)
		}
		if first.IsZero() || m.SentAt.Before(first) {
			first = *m.SentAt
		}
		if m.SentAt.After(last) {
			last = *m.SentAt
		}
	}
	s.checkInboxes(peers, want)

	// 3. Inbound: the peers send n texts; each is stored once, and the
	// phone has the delivery receipt, sent after the commit.
	var wg sync.WaitGroup
	var mu sync.Mutex
	inbound := map[string]bool{}
	for pi, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := pi; i < n; i += len(peers) {
				id, err := s.phone.peerSend(p.JID, phone, fmt.Sprintf("in %04d", i))
				if err != nil {
					t.Errorf("peer send: %v", err)
					return
				}
				mu.Lock()
				inbound[id] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	var listed []message
	s.WaitFor("every inbound message listed", 3*harness.WaitLong, func() (bool, string) {
		var err error
		listed, err = s.client.allMessages(u, "&direction=in")
		return err == nil && len(listed) >= n, fmt.Sprint(len(listed), err)
	})
	var toReceipt []time.Duration
	for _, m := range listed {
		if !inbound[m.WAMessageID] {
			t.Fatalf("listed a message no peer sent: %+v", m)
		}
		delete(inbound, m.WAMessageID)
		var sm struct {
			Devices []struct {
				DeliveredAt *time.Time `json:"delivered_at"`
			} `json:"devices"`
		}
		s.WaitFor("the receipt of "+m.WAMessageID, harness.WaitLong, func() (bool, string) {
			_, err := s.phone.Call("GET", "/messages/"+url.PathEscape(m.WAMessageID), nil, &sm, http.StatusOK)
			return err == nil && len(sm.Devices) == 1 && sm.Devices[0].DeliveredAt != nil, fmt.Sprint(sm, err)
		})
		full, err := s.client.message(u, m.MessageID)
		if err != nil {
			t.Fatal(err)
		}
		toReceipt = append(toReceipt, sm.Devices[0].DeliveredAt.Sub(full.History[0].At))
	}
	if len(listed) != n || len(inbound) != 0 {
		t.Fatalf("inbound: %d listed for %d sent, %d missing", len(listed), n, len(inbound))
	}
	st, err := s.phone.msgStats()
	if err != nil || st.DuplicateMessages != 0 || st.DecryptFailures != 0 || st.RejectedMessages != 0 {
		t.Fatalf("emulator: %+v %v; want no duplicate, decrypt failure or rejection", st, err)
	}
	t.Logf("FIGURE race=%v, %d messages per phase, SEND_RATE=0, 3 peers", harness.RaceEnabled(), n)
	t.Logf("FIGURE POST /messages (one after the other): p50 %s p99 %s", pct(posts, 50).Round(10*time.Microsecond), pct(posts, 99).Round(10*time.Microsecond))
	t.Logf("FIGURE accepted -> sent (one at a time; Postgres clock, status history): p50 %s p99 %s", pct(toSent, 50).Round(10*time.Microsecond), pct(toSent, 99).Round(10*time.Microsecond))
	if span := last.Sub(first); span > 0 {
		t.Logf("FIGURE one worker draining a backlog of %d: %.0f messages/s (first to last sent_at %s)", n, float64(n-1)/span.Seconds(), span.Round(time.Millisecond))
	}
	t.Logf("FIGURE inbound commit -> delivery receipt at the phone: p50 %s p99 %s", pct(toReceipt, 50).Round(10*time.Microsecond), pct(toReceipt, 99).Round(10*time.Microsecond))
}

// historySync has the account's phone share chats with its linked devices
// (the emulator's POST /phone/history); it returns the notification's id
// and the ids of the texts, chat by chat.
func (c *emuClient) historySync(account string, chats []map[string]any) (string, [][]string, error) {
	var r struct {
		ID    string `json:"id"`
		Chats []struct {
			Messages []struct {
				ID string `json:"id"`
			} `json:"messages"`
		} `json:"chats"`
	}
	if _, err := c.Call("POST", "/phone/history", map[string]any{"account": account, "chats": chats}, &r, http.StatusOK); err != nil {
		return "", nil, err
	}
	var ids [][]string
	for _, ch := range r.Chats {
		var cids []string
		for _, m := range ch.Messages {
			cids = append(cids, m.ID)
		}
		ids = append(ids, cids)
	}
	return r.ID, ids, nil
}

// waitHistoryTaken waits until every linked device of the phone has sent
// its receipt for the history notification id (the client took it).
func (s *stack) waitHistoryTaken(id string) {
	s.T.Helper()
	s.WaitFor("the history notification receipted", harness.WaitLong, func() (bool, string) {
		var sm struct {
			Devices []struct {
				State string `json:"state"`
			} `json:"devices"`
		}
		_, err := s.phone.Call("GET", "/messages/"+url.PathEscape(id), nil, &sm, http.StatusOK)
		if err != nil || len(sm.Devices) == 0 {
			return false, fmt.Sprint(sm, err)
		}
		for _, d := range sm.Devices {
			if d.State != "delivered" && d.State != "read" {
				return false, fmt.Sprint(sm)
			}
		}
		return true, ""
	})
}

// TestMessagesHistorySync: the history a phone shares after pairing is not
// downloaded with HISTORY_SYNC=none (the default: nothing of it is
// stored, though the client takes the notification), and with
// HISTORY_SYNC=recent the contacts' texts in it are stored as received
// messages, once each (a text that also came live is not stored twice;
// the account's own texts are not inbound).
func TestMessagesHistorySync(t *testing.T) {
	s := newStack(t, stackOpts{})
	bea := s.peer("+15557400001", "Bea")
	cal := s.peer("+15557400002", "Cal")
	history := func(bea, cal []map[string]any) []map[string]any {
		return []map[string]any{{"with": "+15557400001", "messages": bea}, {"with": "+15557400002", "messages": cal}}
	}
	text := func(t string, fromMe bool) map[string]any { return map[string]any{"text": t, "fromMe": fromMe} }

	// none (the default).
	u1 := newUser()
	s.link(u1, "+15550007001", "Nia")
	id, _, err := s.phone.historySync("+15550007001", history(
		[]map[string]any{text("old from Bea", false)}, []map[string]any{text("old from Cal", false)}))
	if err != nil {
		t.Fatal(err)
	}
	s.waitHistoryTaken(id) // nothing of it stored: checked at the end, when a download would have been

	// recent: the worker restarts with it; a new account pairs.
	done := s.Workers["w1"].Signal(syscall.SIGTERM)
	s.Workers["w1"].WaitExit(done, harness.WaitLong)
	s.Workers["w1"].Setenv("HISTORY_SYNC", "recent")
	s.StartWorker("w1")
	u2 := newUser()
	s.link(u2, "+15550007002", "Oli")
	live, err := s.phone.peerSend(bea.JID, "+15550007002", "live from Bea")
	if err != nil {
		t.Fatal(err)
	}
	s.WaitFor("the live text stored", harness.WaitLong, func() (bool, string) {
		in, err := s.client.allMessages(u2, "&direction=in")
		return err == nil && len(in) == 1, fmt.Sprint(len(in), err)
	})
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	bm := []map[string]any{
		{"text": "hi from Bea, an hour ago", "at": at},
		text("my answer", true),
		{"id": live, "text": "live from Bea"}, // the live text again
	}
	id, ids, err := s.phone.historySync("+15550007002", history(bm, []map[string]any{text("hello from Cal", false)}))
	if err != nil {
		t.Fatal(err)
	}
	s.waitHistoryTaken(id)
	var in []message
	s.WaitFor("the history's contact texts stored", harness.WaitLong, func() (bool, string) {
		in, err = s.client.allMessages(u2, "&direction=in")
		return err == nil && len(in) >= 3, fmt.Sprint(len(in), err)
	})
	time.Sleep(time.Second) // a late duplicate would show now
	in, err = s.client.allMessages(u2, "&direction=in")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]message{}
	for _, m := range in {
		if _, dup := got[m.WAMessageID]; dup {
			t.Fatalf("%s stored twice", m.WAMessageID)
		}
		got[m.WAMessageID] = m
	}
	want := map[string][2]string{ // id -> chat, text
		ids[0][0]: {bea.Phone, "hi from Bea, an hour ago"},
		live:      {bea.Phone, "live from Bea"},
		ids[1][0]: {cal.Phone, "hello from Cal"},
	}
	if len(got) != len(want) {
		t.Fatalf("stored %d inbound messages, want %d (the account's own text is not inbound): %+v", len(got), len(want), in)
	}
	for id, w := range want {
		m, ok := got[id]
		if !ok || m.Chat != w[0] || m.Text != w[1] || m.Status != "received" {
			t.Fatalf("message %s: %+v, want from %s %q", id, m, w[0], w[1])
		}
	}
	if _, ok := got[ids[0][1]]; ok {
		t.Fatal("the account's own text from the history was stored as received")
	}
	if st, err := s.phone.msgStats(); err != nil || st.DecryptFailures != 0 {
		t.Fatalf("emulator: %+v %v", st, err)
	}
	if in, err := s.client.allMessages(u1, "&direction=in"); err != nil || len(in) != 0 {
		t.Fatalf("HISTORY_SYNC=none stored %d messages from the history: %+v %v", len(in), in, err)
	}
}

// TestMessagesCrashBetweenSendAndAck: the hosting worker is SIGKILLed
// after WhatsApp recorded a text but before its ack reached the worker
// (the emulator withholds it). The new host holds the text back for a few
// seconds after logging in, and WhatsApp hands it the receipts it missed:
//   - the recipient's delivery receipt: the text is delivered, sent once;
//   - the recipient's phone offline (its receipt 20 s late): the account's
//     own phone's receipt for its copy says WhatsApp holds the text, so it
//     is sent, not sent again, and delivered when the phone is back: once
//     at the emulator (count 1, no duplicate);
//   - both phones offline: nothing tells the new host WhatsApp has it, and
//     it sends it again with the same id: the recipient shows it once (one
//     inbox entry), its arrival counted twice (the known limit in
//     DESIGN-NOTES).
func TestMessagesCrashBetweenSendAndAck(t *testing.T) {
	s := newStack(t, stackOpts{Env: map[string]string{"SEND_RATE": "0"}})
	p := s.peer("+15557500001", "Gus")
	u := newUser()
	l := s.link(u, "+15550008001", "Hal")
	fault := func(f map[string]any) {
		t.Helper()
		f["device"] = l.jid
		if _, err := s.phone.Call("POST", "/faults", f, nil, http.StatusCreated); err != nil {
			t.Fatal(err)
		}
	}
	dups := func() int64 {
		t.Helper()
		st, err := s.phone.msgStats()
		if err != nil {
			t.Fatal(err)
		}
		return st.DuplicateMessages
	}
	// crash sends text (the n-th in the peer's inbox) with its ack withheld,
	// SIGKILLs its host, restarts it, and returns the message once it is
	// delivered and the hold-back is over, with the peer's inbox entry.
	crash := func(text string, n int) (message, inboxMessage) {
		t.Helper()
		fault(map[string]any{"fault": "withhold_ack", "count": 1})
		m, _, err := s.client.sendMessage(u, p.Phone, text, "")
		if err != nil {
			t.Fatal(err)
		}
		got := s.waitInbox(p, n, harness.WaitLong) // recorded; its ack withheld
		host := str(s.Row(l.sessionID).WorkerID)
		t.Logf("%q recorded, no ack: SIGKILL %s", text, host)
		s.Workers[host].Signal(syscall.SIGKILL)
		s.Workers[host].Kill()
		s.StartWorker(host)
		d := s.waitStatus(u, m.MessageID, "delivered", 2*harness.WaitLong)
		time.Sleep(5 * time.Second) // past the hold-back: a resend would be in by now
		got = s.waitInbox(p, n, harness.WaitLong)
		if len(got) != n || got[n-1].ID != m.WAMessageID || got[n-1].Text != text {
			t.Fatalf("inbox: %+v, want %q once as entry %d", got, text, n)
		}
		return d, got[n-1]
	}

	// The receipt comes back at login: sent once.
	_, in := crash("ack lost, receipt on time", 1)
	if in.Count != 1 || dups() != 0 {
		t.Fatalf("sent %d times (%d duplicates), want once (the receipt at login marks it delivered)", in.Count, dups())
	}

	// The peer's phone is offline (its receipts 20 s late); the account's
	// own phone answers at login: sent once, delivered later.
	fault(map[string]any{"fault": "delay_receipts", "count": 1, "seconds": 20, "phone": p.Phone})
	_, in = crash("ack lost, recipient offline", 2)
	if in.Count != 1 || dups() != 0 {
		t.Fatalf("sent %d times (%d duplicates), want once (the own phone's receipt says WhatsApp has it)", in.Count, dups())
	}

	// Both phones offline: resent with the same id, shown once.
	fault(map[string]any{"fault": "delay_receipts", "count": 2, "seconds": 20})
	d, in := crash("ack lost, both phones offline", 3)
	if in.Count != 2 || d.WAMessageID != in.ID || dups() != 1 {
		t.Fatalf("inbox entry %+v for %s, %d duplicates: want one entry, arrived twice", in, d.WAMessageID, dups())
	}
}
