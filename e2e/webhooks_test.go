package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"wasessions/e2e/harness"
)

// hookReceiver is a real receiver on loopback: every request is verified
// with the Standard Webhooks library; the first acceptance of each
// webhook-id is recorded in order, repeats are counted.
type hookReceiver struct {
	mu      sync.Mutex
	wh      *standardwebhooks.Webhook
	order   map[string][]int64 // session -> sequences in order of first acceptance
	seen    map[string]bool
	repeats int
	bad     []string
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	time.Sleep(20 * time.Millisecond) // keep deliveries in flight while programs die
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.wh == nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if err := h.wh.Verify(body, r.Header); err != nil {
		h.bad = append(h.bad, err.Error())
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	id := r.Header.Get("webhook-id")
	if h.seen[id] {
		h.repeats++
		w.WriteHeader(http.StatusOK)
		return
	}
	var p struct {
		SessionID string `json:"sessionId"`
		Sequence  int64  `json:"sequence"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		h.bad = append(h.bad, err.Error())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.seen[id] = true
	h.order[p.SessionID] = append(h.order[p.SessionID], p.Sequence)
	w.WriteHeader(http.StatusNoContent)
}

func (h *hookReceiver) accepted() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.seen)
}

// TestWebhooksSurviveKills: session and message events are delivered to
// an admin's "all" endpoint while the worker delivering them, the api and
// the scheduler are each SIGKILLed once: every event the outbox holds
// reaches the receiver, verified, in sequence order per session.
func TestWebhooksSurviveKills(t *testing.T) {
	s := newStack(t, stackOpts{Workers: []string{"w1", "w2"}, Env: map[string]string{
		"WEBHOOK_ALLOW_HTTP":     "true",
		"WEBHOOK_ALLOW_PRIVATE":  "true",
		"WEBHOOK_RETRY_SCHEDULE": "200ms,500ms,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s",
		"WEBHOOK_POLL_INTERVAL":  "200ms",
		"SEND_RATE":              "0",
	}})
	h := &hookReceiver{order: map[string][]int64{}, seen: map[string]bool{}}
	srv := httptest.NewServer(h)
	defer srv.Close()

	// The admin's endpoint, through the API.
	admin := newUser()
	body, _ := json.Marshal(map[string]any{"url": srv.URL + "/hook", "scope": "all",
		"events": []string{"session.status", "message.received", "message.status"}})
	req, _ := http.NewRequest("POST", s.client.base+"/api/integrations/webhooks", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.client.token(admin, true))
	req.Header.Set("Content-Type", "application/json")
	res, err := s.client.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var created struct {
		Data struct {
			ID     string `json:"id"`
			Secret string `json:"secret"`
		} `json:"data"`
	}
	if res.StatusCode != http.StatusCreated || json.Unmarshal(raw, &created) != nil || created.Data.Secret == "" {
		t.Fatalf("register: %d %s", res.StatusCode, raw)
	}
	wh, err := standardwebhooks.NewWebhook(created.Data.Secret)
	if err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	h.wh = wh
	h.mu.Unlock()

	const perSession = 30
	ls := s.linkMany(2, 2)
	peers := []peer{s.peer("+15558000001", "P1"), s.peer("+15558000002", "P2")}
	var wg sync.WaitGroup
	for i, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perSession {
				if _, err := s.phone.peerSend(peers[i].JID, l.phone, fmt.Sprintf("hook %d", j)); err != nil {
					t.Errorf("peer send: %v", err)
					return
				}
			}
		}()
	}
	// While message events are being delivered (the receiver accepts more
	// and more of them): SIGKILL the host of the first session, then the
	// api, then the scheduler, each restarted.
	ctx := context.Background()
	progress := func(what string) {
		base := h.accepted()
		s.WaitFor(what, harness.WaitLong, func() (bool, string) {
			var total int
			if err := s.DB.Pool().QueryRow(ctx, `SELECT count(*) FROM webhook_events`).Scan(&total); err != nil {
				return false, err.Error()
			}
			n := h.accepted()
			// Progress, or nothing left to deliver right now.
			return n >= base+2 || n == total, fmt.Sprint(n, " of ", total, " accepted")
		})
	}
	progress("message events under way") // the 6 status events of linking came first
	host := str(s.Row(ls[0].sessionID).WorkerID)
	t.Logf("%d accepted: SIGKILL worker %s", h.accepted(), host)
	s.Workers[host].Signal(syscall.SIGKILL)
	s.Workers[host].Kill()
	s.StartWorker(host)
	progress("deliveries after the worker's restart")
	t.Logf("%d accepted: SIGKILL api", h.accepted())
	s.API.Signal(syscall.SIGKILL)
	s.API.Kill()
	s.StartAPI()
	progress("deliveries after the api's restart")
	t.Logf("%d accepted: SIGKILL scheduler", h.accepted())
	s.Sched.Signal(syscall.SIGKILL)
	s.Sched.Kill()
	s.StartScheduler()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Every inbound message is in the outbox, and every event there
	// reaches the receiver.
	s.WaitFor("every inbound message stored", 2*harness.WaitLong, func() (bool, string) {
		var n int
		err := s.DB.Pool().QueryRow(ctx, `SELECT count(*) FROM webhook_events WHERE type = 'message.received'`).Scan(&n)
		return err == nil && n == 2*perSession, fmt.Sprint(n, err)
	})
	// Quiet: the sessions stay connected, so the event set stops growing.
	want := map[string][]int64{}
	s.WaitFor("every event accepted by the receiver", 3*harness.WaitLong, func() (bool, string) {
		rows, err := s.DB.Pool().Query(ctx, `SELECT session_id, sequence FROM webhook_events ORDER BY session_id, sequence`)
		if err != nil {
			return false, err.Error()
		}
		defer rows.Close()
		want = map[string][]int64{}
		total := 0
		for rows.Next() {
			var sid string
			var seq int64
			if err := rows.Scan(&sid, &seq); err != nil {
				return false, err.Error()
			}
			want[sid] = append(want[sid], seq)
			total++
		}
		return h.accepted() == total, fmt.Sprintf("%d of %d accepted", h.accepted(), total)
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.bad) > 0 {
		t.Fatalf("requests that did not verify: %v", h.bad)
	}
	for sid, seqs := range want {
		if fmt.Sprint(h.order[sid]) != fmt.Sprint(seqs) {
			t.Errorf("session %s: accepted in order %v, want %v", sid, h.order[sid], seqs)
		}
	}
	t.Logf("FIGURE %d sessions, %d events delivered across SIGKILL of worker, api and scheduler; %d repeated ids (retries of accepted events)",
		len(want), len(h.seen), h.repeats)
}
