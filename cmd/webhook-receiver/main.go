// Command webhook-receiver is a webhook receiver for the demo and for
// trying an endpoint out: it listens on a loopback address, verifies every
// request with the Standard Webhooks library (the secret from
// WEBHOOK_SECRET, as POST /api/integrations/webhooks returned it), accepts
// each webhook-id once, and prints each event as one line.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"wasessions/internal/cli"
)

func main() { cli.Main("webhook-receiver", run) }

const usage = `usage: webhook-receiver [-addr HOST:PORT]

Receives wasessions webhooks on a loopback address, verifies
each request with the Standard Webhooks library (secret in WEBHOOK_SECRET) and
prints each event. scripts/demo-webhook.sh runs it.`

func run(ctx context.Context, args []string, getenv func(string) string, out, stderr io.Writer) error {
	fs := cli.FlagSet("webhook-receiver", usage, stderr)
	addr := fs.String("addr", "127.0.0.1:8099", "loopback address to listen on")
	if err := cli.Parse(fs, args[1:], false); err != nil {
		return err
	}
	secret := getenv("WEBHOOK_SECRET")
	if secret == "" {
		return cli.Usage(errors.New("WEBHOOK_SECRET (whsec_...) is required"))
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return cli.Usage(fmt.Errorf("WEBHOOK_SECRET: %w", err))
	}
	h := &handler{wh: wh, out: out, seen: map[string]bool{}}
	srv := &http.Server{Addr: *addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	fmt.Fprintf(out, "listening on http://%s/ ; every request is verified with the Standard Webhooks library\n", *addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type handler struct {
	wh   *standardwebhooks.Webhook
	out  io.Writer
	mu   sync.Mutex
	seen map[string]bool
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if err := h.wh.Verify(body, r.Header); err != nil {
		fmt.Fprintf(h.out, "REFUSED %s: %v\n", r.Header.Get("webhook-id"), err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var p struct {
		Type      string          `json:"type"`
		SessionID string          `json:"sessionId"`
		Sequence  int64           `json:"sequence"`
		Data      json.RawMessage `json:"data"`
	}
	_ = json.Unmarshal(body, &p)
	id := r.Header.Get("webhook-id")
	h.mu.Lock()
	again := h.seen[id]
	h.seen[id] = true
	h.mu.Unlock()
	if again {
		fmt.Fprintf(h.out, "verified  %s again (a retry: already accepted)\n", id)
	} else {
		fmt.Fprintf(h.out, "verified  %-16s seq %-4d %s  %s\n", p.Type, p.Sequence, p.SessionID, p.Data)
	}
	w.WriteHeader(http.StatusNoContent)
}
