package httpapi_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"wasessions/internal/store"
)

// An admin routes one session through a proxy: the session row keeps the
// full URL (the worker needs the password), the answer and the logs never
// show the password, bad input gets a clear 4xx, and only admins may do it.
func TestAdminSetsSessionProxy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	owner := newUser()
	sess, _, err := e.store.CreateSession(ctx, store.NewSession{UserID: owner, SessionID: "whatsapp_proxy_1", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	path := "/api/integrations/admin/sessions/" + sess.SessionID + "/proxy"
	admin := e.token(newUser(), true)

	cases := []struct {
		name   string
		path   string
		token  string
		body   string
		ctype  string
		status int
		code   string
		shown  any // the proxy in the answer (nil: null)
		stored string
	}{
		{name: "not an admin", path: path, token: e.token(owner, false), body: `{"proxy":"socks5://127.0.0.1:1080"}`, status: 403, code: "forbidden"},
		{name: "unknown session", path: "/api/integrations/admin/sessions/nope/proxy", token: admin, body: `{"proxy":null}`, status: 404, code: "session_not_found"},
		{name: "bad scheme", path: path, token: admin, body: `{"proxy":"ftp://u:hunter2@127.0.0.1:21"}`, status: 400, code: "invalid_proxy"},
		{name: "no port", path: path, token: admin, body: `{"proxy":"socks5://u:hunter2@127.0.0.1"}`, status: 400, code: "invalid_proxy"},
		{name: "too long", path: path, token: admin, body: `{"proxy":"socks5://` + strings.Repeat("a", 600) + `:1"}`, status: 400, code: "invalid_proxy"},
		{name: "unknown field", path: path, token: admin, body: `{"proxy":null,"x":1}`, status: 400, code: "invalid_request"},
		{name: "not JSON", path: path, token: admin, body: `proxy=1`, ctype: "text/plain", status: 415, code: "unsupported_media_type"},
		{name: "socks5 with password", path: path, token: admin, body: `{"proxy":"socks5://ops:hunter2@127.0.0.1:1080"}`, status: 200,
			shown: "socks5://ops:xxxxx@127.0.0.1:1080", stored: "socks5://ops:hunter2@127.0.0.1:1080"},
		{name: "http", path: path, token: admin, body: `{"proxy":"http://127.0.0.1:3128"}`, status: 200,
			shown: "http://127.0.0.1:3128", stored: "http://127.0.0.1:3128"},
		{name: "cleared", path: path, token: admin, body: `{"proxy":null}`, status: 200, shown: nil, stored: ""},
	}
	for _, c := range cases {
		r := e.do(req{method: "PUT", path: c.path, token: c.token, body: []byte(c.body),
			header: map[string]string{"Content-Type": map[bool]string{true: c.ctype, false: "application/json"}[c.ctype != ""]}})
		if strings.Contains(string(r.Body), "hunter2") {
			t.Fatalf("%s: the answer shows the password: %s", c.name, r.Body)
		}
		if c.status != 200 {
			r.wantError(t, c.status, c.code)
			continue
		}
		var got struct {
			SessionID string  `json:"sessionId"`
			Proxy     *string `json:"proxy"`
		}
		r.data(t, &got)
		switch want := c.shown.(type) {
		case nil:
			if got.Proxy != nil {
				t.Fatalf("%s: proxy = %q, want null", c.name, *got.Proxy)
			}
		case string:
			if got.Proxy == nil || *got.Proxy != want {
				t.Fatalf("%s: proxy = %v, want %s", c.name, got.Proxy, want)
			}
		}
		row, err := e.store.Get(ctx, sess.SessionID)
		if err != nil {
			t.Fatal(err)
		}
		if store.Str(row.ProxyURL) != c.stored {
			t.Fatalf("%s: stored %q, want %q", c.name, store.Str(row.ProxyURL), c.stored)
		}
	}
	if strings.Contains(e.logs.String(), "hunter2") {
		t.Fatal("a log line shows the proxy password")
	}
}
