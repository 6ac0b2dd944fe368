package httpapi_test

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"wasessions/internal/httpapi"
	"wasessions/internal/netguard"
	"wasessions/internal/store"
	"wasessions/internal/webhook"
)

const webhooksPath = "/api/integrations/webhooks"

// dnsTable answers host lookups from a map; no lookup leaves the process.
type dnsTable map[string]string

func (d dnsTable) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := d[host]; ok {
		return []netip.Addr{netip.MustParseAddr(a)}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func newWebhookEnv(t *testing.T, max int) *env {
	return newEnv(t, func(s *setup) {
		s.opts.Webhooks = httpapi.WebhookOptions{MaxEndpoints: max, Guard: netguard.Guard{Resolver: dnsTable{
			"hooks.example.com":    "93.184.216.34",
			"internal.example.com": "10.20.30.40",
		}}}
	})
}

type webhookJSON struct {
	ID                  string     `json:"id"`
	URL                 string     `json:"url"`
	Events              []string   `json:"events"`
	Scope               string     `json:"scope"`
	Enabled             bool       `json:"enabled"`
	DisabledReason      *string    `json:"disabledReason"`
	PreviousSecretUntil *time.Time `json:"previousSecretUntil"`
	Secret              string     `json:"secret"`
}

func createWebhook(t *testing.T, e *env, tok, body string) webhookJSON {
	t.Helper()
	r := e.do(req{method: "POST", path: webhooksPath, token: tok, body: []byte(body)})
	if r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var w webhookJSON
	r.data(t, &w)
	return w
}

func TestWebhookEndpointsLifecycle(t *testing.T) {
	e := newWebhookEnv(t, 10)
	u := newUser()
	tok := e.token(u, false)
	w := createWebhook(t, e, tok, `{"url":"https://hooks.example.com/wh","events":["message.status","session.status","session.status"]}`)
	if !strings.HasPrefix(w.Secret, "whsec_") || !w.Enabled || w.Scope != "user" ||
		strings.Join(w.Events, ",") != "session.status,message.status" {
		t.Fatalf("created: %+v", w)
	}
	// The secret is stored encrypted or not, but never shown again.
	var list []webhookJSON
	e.do(req{method: "GET", path: webhooksPath, token: tok}).data(t, &list)
	if len(list) != 1 || list[0].ID != w.ID || list[0].Secret != "" {
		t.Fatalf("list: %+v", list)
	}
	var got webhookJSON
	e.do(req{method: "GET", path: webhooksPath + "/" + w.ID, token: tok}).data(t, &got)
	if got.URL != w.URL || got.Secret != "" {
		t.Fatalf("get: %+v", got)
	}
	e.do(req{method: "PATCH", path: webhooksPath + "/" + w.ID, token: tok,
		body: []byte(`{"enabled":false,"events":["message.received"]}`)}).data(t, &got)
	if got.Enabled || len(got.Events) != 1 || got.Events[0] != "message.received" {
		t.Fatalf("patched: %+v", got)
	}
	var rot webhookJSON
	e.do(req{method: "POST", path: webhooksPath + "/" + w.ID + "/rotate-secret", token: tok}).data(t, &rot)
	if rot.Secret == w.Secret || !strings.HasPrefix(rot.Secret, "whsec_") || rot.PreviousSecretUntil == nil ||
		rot.PreviousSecretUntil.Before(time.Now().Add(23*time.Hour)) {
		t.Fatalf("rotated: %+v", rot)
	}
	var page struct {
		Deliveries []json.RawMessage `json:"deliveries"`
		NextCursor *string           `json:"nextCursor"`
	}
	e.do(req{method: "GET", path: webhooksPath + "/" + w.ID + "/deliveries", token: tok}).data(t, &page)
	if len(page.Deliveries) != 0 || page.NextCursor != nil {
		t.Fatalf("deliveries: %+v", page)
	}
	e.do(req{method: "GET", path: webhooksPath + "/" + w.ID + "/deliveries?cursor=zz", token: tok}).wantError(t, 400, "invalid_cursor")

	// Another user sees none of it: 404 everywhere.
	other := e.token(newUser(), false)
	for _, r := range []req{
		{method: "GET", path: webhooksPath + "/" + w.ID},
		{method: "PATCH", path: webhooksPath + "/" + w.ID, body: []byte(`{"enabled":true}`)},
		{method: "DELETE", path: webhooksPath + "/" + w.ID},
		{method: "POST", path: webhooksPath + "/" + w.ID + "/rotate-secret"},
		{method: "GET", path: webhooksPath + "/" + w.ID + "/deliveries"},
		{method: "POST", path: webhooksPath + "/" + w.ID + "/events/" + w.ID + "/replay"},
		{method: "GET", path: webhooksPath + "/not-a-uuid"},
	} {
		r.token = other
		e.do(r).wantError(t, 404, "webhook_not_found")
	}
	e.do(req{method: "GET", path: webhooksPath, token: other}).data(t, &list)
	if len(list) != 0 {
		t.Fatalf("another user lists %d endpoints", len(list))
	}

	e.do(req{method: "DELETE", path: webhooksPath + "/" + w.ID, token: tok})
	e.do(req{method: "GET", path: webhooksPath + "/" + w.ID, token: tok}).wantError(t, 404, "webhook_not_found")
	e.do(req{method: "GET", path: webhooksPath, token: ""}).wantError(t, 401, "token_missing")
}

// URLs the service must not send to are refused with a clear 400, in the
// default configuration, without any connection: the names resolve
// through a table.
func TestWebhookBadInput(t *testing.T) {
	e := newWebhookEnv(t, 2)
	tok := e.token(newUser(), false)
	cases := []struct {
		name, body string
		status     int
		code, msg  string
	}{
		{"localhost", `{"url":"https://localhost/wh","events":["session.status"]}`, 400, "invalid_webhook_url", "loopback"},
		{"loopback ip", `{"url":"https://127.0.0.1:8443/wh","events":["session.status"]}`, 400, "invalid_webhook_url", "loopback"},
		{"ten net", `{"url":"https://10.1.2.3/wh","events":["session.status"]}`, 400, "invalid_webhook_url", "private"},
		{"name to ten net", `{"url":"https://internal.example.com/wh","events":["session.status"]}`, 400, "invalid_webhook_url", "private"},
		{"metadata", `{"url":"https://169.254.169.254/latest/meta-data","events":["session.status"]}`, 400, "invalid_webhook_url", "link-local"},
		{"plain http", `{"url":"http://hooks.example.com/wh","events":["session.status"]}`, 400, "invalid_webhook_url", "https"},
		{"unresolvable", `{"url":"https://nowhere.example.com/wh","events":["session.status"]}`, 400, "invalid_webhook_url", "resolve"},
		{"no events", `{"url":"https://hooks.example.com/wh","events":[]}`, 400, "invalid_events", ""},
		{"unknown event", `{"url":"https://hooks.example.com/wh","events":["session.deleted"]}`, 400, "invalid_events", ""},
		{"missing url", `{"events":["session.status"]}`, 400, "invalid_request", ""},
		{"unknown field", `{"url":"https://hooks.example.com/wh","events":["session.status"],"secret":"x"}`, 400, "invalid_request", ""},
		{"bad scope", `{"url":"https://hooks.example.com/wh","events":["session.status"],"scope":"team"}`, 400, "invalid_scope", ""},
		{"scope all needs admin", `{"url":"https://hooks.example.com/wh","events":["session.status"],"scope":"all"}`, 403, "forbidden", ""},
		{"not json", `{"url":`, 400, "invalid_json", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := e.do(req{method: "POST", path: webhooksPath, token: tok, body: []byte(c.body)}).wantError(t, c.status, c.code)
			if !strings.Contains(env.Error.Message, c.msg) {
				t.Fatalf("message %q does not say %q", env.Error.Message, c.msg)
			}
		})
	}
	var list []webhookJSON
	e.do(req{method: "GET", path: webhooksPath, token: tok}).data(t, &list)
	if len(list) != 0 {
		t.Fatalf("bad requests left %d endpoints", len(list))
	}
	// An admin may register for every user's events; the cap holds.
	admin := e.token(newUser(), true)
	w := createWebhook(t, e, admin, `{"url":"https://hooks.example.com/a","events":["session.status"],"scope":"all"}`)
	if w.Scope != "all" {
		t.Fatalf("admin endpoint: %+v", w)
	}
	createWebhook(t, e, admin, `{"url":"https://hooks.example.com/b","events":["session.status"]}`)
	e.do(req{method: "POST", path: webhooksPath, token: admin, body: []byte(`{"url":"https://hooks.example.com/c","events":["session.status"]}`)}).
		wantError(t, 409, "webhook_limit")
	e.do(req{method: "PATCH", path: webhooksPath + "/" + w.ID, token: admin, body: []byte(`{"url":"https://10.0.0.1/"}`)}).
		wantError(t, 400, "invalid_webhook_url")
	e.do(req{method: "PATCH", path: webhooksPath + "/" + w.ID, token: admin, body: []byte(`{}`)}).
		wantError(t, 400, "invalid_request")
}

// A replay is accepted for an event the endpoint may see, and refused
// (404) for another user's event; the payload an event renders to is the
// contract's WebhookPayload.
func TestWebhookReplayAndPayloadContract(t *testing.T) {
	e := newWebhookEnv(t, 10)
	u := newUser()
	tok := e.token(u, false)
	w := createWebhook(t, e, tok, `{"url":"https://hooks.example.com/wh","events":["session.status","message.received"]}`)
	var s sessionJSON
	e.do(req{method: "POST", path: sessionPath, token: tok}).data(t, &s)
	other := newUser()
	e.do(req{method: "POST", path: sessionPath, token: e.token(other, false)})

	eventOf := func(user string) store.WebhookEvent {
		t.Helper()
		var ev store.WebhookEvent
		if err := e.store.Pool().QueryRow(context.Background(), `SELECT id::text, user_id::text, session_id, sequence, type,
				occurred_at, snapshot FROM webhook_events WHERE user_id = $1 ORDER BY sequence LIMIT 1`, user).
			Scan(&ev.ID, &ev.UserID, &ev.SessionID, &ev.Sequence, &ev.Type, &ev.OccurredAt, &ev.Snapshot); err != nil {
			t.Fatal(err)
		}
		return ev
	}
	mine, theirs := eventOf(u), eventOf(other)
	r := e.do(req{method: "POST", path: webhooksPath + "/" + w.ID + "/events/" + mine.ID + "/replay", token: tok})
	if r.Status != 202 {
		t.Fatalf("replay: %d %s", r.Status, r.Body)
	}
	e.do(req{method: "POST", path: webhooksPath + "/" + w.ID + "/events/" + theirs.ID + "/replay", token: tok}).
		wantError(t, 404, "event_not_found")
	e.do(req{method: "POST", path: webhooksPath + "/" + w.ID + "/events/x/replay", token: tok}).
		wantError(t, 404, "event_not_found")

	body, err := webhook.Render(mine)
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := spec(t)
	checkJSON(t, doc, "WebhookPayload", body)
	if !strings.Contains(string(body), `"sessionId":"`+s.SessionID+`"`) || !strings.Contains(string(body), `"status":"pending"`) {
		t.Fatalf("payload: %s", body)
	}
}
