package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"wasessions/internal/cli"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// Bad configuration stops the worker before it touches anything, with exit
// code 2 and a message naming the variable.
func TestBadConfigurationExitsWithUsage(t *testing.T) {
	tests := []struct {
		name, variable string
		env            map[string]string
	}{
		{"worker id", "WORKER_ID", map[string]string{"WORKER_ID": "not ok"}},
		{"lease", "LEASE_TTL", map[string]string{"WORKER_ID": "w", "LEASE_TTL": "1s"}},
		{"emulator key", "WA_SERVER_PUBKEY", map[string]string{"WORKER_ID": "w", "WA_SERVER_ADDR": "127.0.0.1:1"}},
		{"unparsable", "WORKER_MAX_SESSIONS", map[string]string{"WORKER_ID": "w", "WORKER_MAX_SESSIONS": "lots"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), []string{"worker"}, envOf(tt.env), io.Discard, io.Discard)
			if cli.ExitCode(err) != 2 || !strings.Contains(fmt.Sprint(err), tt.variable) {
				t.Fatalf("err = %v (exit %d), want exit 2 naming %s", err, cli.ExitCode(err), tt.variable)
			}
		})
	}
}

// -h prints the usage and exits 0 (it started a worker before); stray
// arguments exit 2.
func TestCommandLine(t *testing.T) {
	env := map[string]string{"WORKER_ID": "w-help", "DATABASE_URL": "postgres://postgres@127.0.0.1:1/none", "REDIS_URL": "redis://127.0.0.1:1/0"}
	testfactory.ProgramShape(t, "worker", run, envOf(env))
}

// The worker starts on real Postgres and Redis (migrating the database),
// serves /healthz and /metrics, and stops cleanly when told to.
func TestStartServeStop(t *testing.T) {
	dsn := testenv.NewDatabase(t)
	r := testenv.NewRedisDB(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	env := envOf(map[string]string{
		"DATABASE_URL": dsn, "REDIS_URL": r.URL(), "WORKER_ID": "w-test", "METRICS_ADDR": addr,
		"WA_SERVER_ADDR": "127.0.0.1:1", "WA_SERVER_PUBKEY": strings.Repeat("ab", 32),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"worker"}, env, io.Discard, io.Discard) }()

	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body), "wasessions_worker_hosted_sessions") {
				break
			}
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("worker never served its metrics: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("worker did not stop")
	}
}
