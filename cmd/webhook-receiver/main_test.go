package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"wasessions/internal/testfactory"
	"wasessions/internal/webhook"
)

// -h prints the usage and exits 0; stray arguments exit 2.
func TestCommandLine(t *testing.T) {
	env := map[string]string{"WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
	testfactory.ProgramShape(t, "webhook-receiver", run, func(k string) string { return env[k] })
}

// The receiver accepts what the service signs, once per webhook-id, and
// refuses a request signed with another secret.
func TestVerifies(t *testing.T) {
	secret, err := webhook.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := webhook.NewSecret()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	out := &testfactory.LogBuffer{}
	srv := httptest.NewServer(&handler{wh: wh, out: out, seen: map[string]bool{}})
	defer srv.Close()
	post := func(sec string) int {
		body := []byte(`{"id":"e1","type":"session.status","sessionId":"s1","sequence":1,"data":{}}`)
		ts := time.Now()
		sig, err := webhook.Sign([]string{sec}, "e1", ts, body)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("POST", srv.URL, bytes.NewReader(body))
		req.Header.Set("webhook-id", "e1")
		req.Header.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
		req.Header.Set("webhook-signature", sig)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if s := post(other); s != 401 {
		t.Fatalf("wrong secret: %d", s)
	}
	if s := post(secret); s != 204 {
		t.Fatalf("right secret: %d", s)
	}
	if s := post(secret); s != 204 {
		t.Fatalf("again: %d", s)
	}
	o := out.String()
	if !strings.Contains(o, "verified  session.status") || !strings.Contains(o, "REFUSED") || !strings.Contains(o, "again") {
		t.Fatalf("output: %s", o)
	}
}
