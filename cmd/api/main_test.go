package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"wasessions/internal/auth"
	"wasessions/internal/cli"
	"wasessions/internal/config"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
)

const (
	secret      = "cmd-api-test-secret-0123456789abcdef"
	monitorPass = "pw-for-monitor-0123456789"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestBadConfigurationExits2(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no secret", map[string]string{}, nil, "JWT_SECRET"},
		{"short secret", map[string]string{"JWT_SECRET": "short"}, nil, "JWT_SECRET"},
		{"bad duration", map[string]string{"JWT_SECRET": secret, "QR_WAIT": "soon"}, nil, "QR_WAIT"},
		{"bad addr", map[string]string{"JWT_SECRET": secret, "HTTP_ADDR": "nope"}, nil, "HTTP_ADDR"},
		{"bad redis url", map[string]string{"JWT_SECRET": secret, "REDIS_URL": "http://x"}, nil, "REDIS_URL"},
		{"short monitor password", map[string]string{"JWT_SECRET": secret, "MONITOR_PASSWORD": "change-me"}, nil, "MONITOR_PASSWORD: must be at least 16 characters"},
		{"bad monitor addr", map[string]string{"JWT_SECRET": secret, "MONITOR_PASSWORD": monitorPass, "MONITOR_ADDR": "nope"}, nil, "MONITOR_ADDR"},
		{"unknown flag", map[string]string{"JWT_SECRET": secret}, []string{"--bogus"}, "bogus"},
		{"unknown command", map[string]string{"JWT_SECRET": secret}, []string{"serve-please"}, "serve-please"},
		{"token without user", map[string]string{"JWT_SECRET": secret}, []string{"token"}, "--user"},
		{"token bad uuid", map[string]string{"JWT_SECRET": secret}, []string{"token", "--user", "alice"}, "UUID"},
		{"token bad ttl", map[string]string{"JWT_SECRET": secret}, []string{"token", "--user", "6f1c2d3e-4a5b-4c6d-8e7f-901234567890", "--ttl", "-1h"}, "ttl"},
		{"short METRICS_TOKEN", map[string]string{"JWT_SECRET": secret, "METRICS_TOKEN": "short"}, nil, "METRICS_TOKEN"},
		{"bad API_METRICS_ADDR", map[string]string{"JWT_SECRET": secret, "API_METRICS_ADDR": "nope"}, nil, "API_METRICS_ADDR"},
		{"token ttl over JWT_MAX_TTL", map[string]string{"JWT_SECRET": secret, "JWT_MAX_TTL": "1h"}, []string{"token", "--user", "6f1c2d3e-4a5b-4c6d-8e7f-901234567890", "--ttl", "2h"}, "JWT_MAX_TTL"},
		{"JWT_MAX_TTL too short", map[string]string{"JWT_SECRET": secret, "JWT_MAX_TTL": "10s"}, nil, "JWT_MAX_TTL"},
		{"token no secret", map[string]string{}, []string{"token", "--user", "6f1c2d3e-4a5b-4c6d-8e7f-901234567890"}, "JWT_SECRET"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), append([]string{"api"}, tc.args...), envOf(tc.env), &out, &errOut)
			if cli.ExitCode(err) != 2 {
				t.Fatalf("exit code %d (%v), want 2", cli.ExitCode(err), err)
			}
			if !strings.Contains(err.Error()+errOut.String(), tc.want) {
				t.Fatalf("message does not name %s: %v / %s", tc.want, err, errOut.String())
			}
			if out.Len() > 0 {
				t.Fatalf("printed to stdout: %q", out.String())
			}
		})
	}
}

// -h prints the usage and exits 0; stray arguments exit 2.
func TestCommandLine(t *testing.T) {
	env := map[string]string{"JWT_SECRET": secret, "DATABASE_URL": "postgres://postgres@127.0.0.1:1/none", "REDIS_URL": "redis://127.0.0.1:1/0"}
	testfactory.ProgramShape(t, "api", run, envOf(env))
}

func TestTokenCommand(t *testing.T) {
	t.Parallel()
	user := "6F1C2D3E-4A5B-4C6D-8E7F-901234567890"
	env := map[string]string{"JWT_SECRET": secret, "JWT_ISSUER": "iss-x", "JWT_AUDIENCE": "aud-y"}
	for _, admin := range []bool{false, true} {
		args := []string{"api", "token", "--user", user, "--ttl", "5m"}
		if admin {
			args = append(args, "--admin")
		}
		var out bytes.Buffer
		if err := run(context.Background(), args, envOf(env), &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		v, _ := auth.NewVerifier(auth.Config{Secret: []byte(secret), Issuer: "iss-x", Audience: "aud-y"})
		id, err := v.Verify(strings.TrimSpace(out.String()))
		if err != nil {
			t.Fatalf("the printed token does not verify: %v", err)
		}
		if id.UserID != strings.ToLower(user) || id.Admin != admin {
			t.Fatalf("identity %+v", id)
		}
		// Another issuer's verifier refuses it.
		other, _ := auth.NewVerifier(auth.Config{Secret: []byte(secret), Issuer: "someone-else"})
		if _, err := other.Verify(strings.TrimSpace(out.String())); err == nil {
			t.Fatal("token accepted by a verifier expecting another issuer")
		}
	}
}

// `api token` finds JWT_SECRET in .run/env, where make run and make demo
// keep it, when the environment lacks it (before, it failed with
// "JWT_SECRET: is required" and the README did not say where it was); the
// environment wins; an --env-file named but missing is an error.
func TestTokenReadsTheRunEnvFile(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	const fileSecret = "file-secret-0123456789abcdef0123456789"
	if err := os.MkdirAll(".run", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(".run/env", []byte("# Generated by scripts/run.sh\nJWT_SECRET="+fileSecret+"\nMONITOR_PASSWORD=0123456789abcdefghij\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	user := "6f1c2d3e-4a5b-4c6d-8e7f-901234567890"
	for _, tc := range []struct {
		name       string
		env        map[string]string
		args       []string
		wantSecret string
	}{
		{"from .run/env", nil, nil, fileSecret},
		{"the environment wins", map[string]string{"JWT_SECRET": secret}, nil, secret},
		{"a named file", nil, []string{"--env-file", filepath.Join(dir, ".run", "env")}, fileSecret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			args := append([]string{"api", "token", "--user", user}, tc.args...)
			if err := run(context.Background(), args, envOf(tc.env), &out, io.Discard); err != nil {
				t.Fatal(err)
			}
			v, _ := auth.NewVerifier(auth.Config{Secret: []byte(tc.wantSecret)})
			if _, err := v.Verify(strings.TrimSpace(out.String())); err != nil {
				t.Fatalf("the token is not signed with the expected secret: %v", err)
			}
		})
	}
	err := run(context.Background(), []string{"api", "token", "--user", user, "--env-file", "missing.env"}, envOf(nil), io.Discard, io.Discard)
	if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), "missing.env") {
		t.Fatalf("a missing --env-file: %v (exit %d), want exit 2 naming it", err, cli.ExitCode(err))
	}
	t.Chdir(t.TempDir()) // no .run/env here
	err = run(context.Background(), []string{"api", "token", "--user", user}, envOf(nil), io.Discard, io.Discard)
	if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), ".run/env") {
		t.Fatalf("no secret anywhere: %v, want exit 2 saying where make run keeps it", err)
	}
}

func TestServeMigratesServesAndStops(t *testing.T) {
	t.Parallel()
	dsn := testenv.NewDatabase(t) // empty: run applies the migrations
	rdb := testenv.NewRedisDB(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	const metricsToken = "metrics-token-0123456789"
	env := map[string]string{
		"JWT_SECRET": secret, "DATABASE_URL": dsn, "REDIS_URL": rdb.URL(), "HTTP_ADDR": addr,
		"MONITOR_PASSWORD": monitorPass, "QR_WAIT": "0s",
		"API_METRICS_ADDR": metricsAddr, "METRICS_TOKEN": metricsToken,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &testfactory.LogBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"api"}, envOf(env), logs, io.Discard) }()

	base := "http://" + addr
	waitReady(t, base, done, logs)

	var tok bytes.Buffer
	if err := run(context.Background(), []string{"api", "token", "--user", "6f1c2d3e-4a5b-4c6d-8e7f-901234567890"}, envOf(env), &tok, io.Discard); err != nil {
		t.Fatal(err)
	}
	hr, _ := http.NewRequest("POST", base+"/api/integrations/whatsapp/session", nil)
	hr.Header.Set("Authorization", "Bearer "+strings.TrimSpace(tok.String()))
	res, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("create through the served API: %d", res.StatusCode)
	}
	req, _ := http.NewRequest("GET", base+"/monitor", nil)
	req.SetBasicAuth("admin", monitorPass)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("monitor: %d", res.StatusCode)
	}
	// /metrics only on API_METRICS_ADDR, only with METRICS_TOKEN.
	for _, tc := range []struct {
		url, token string
		want       int
	}{
		{base + "/metrics", metricsToken, http.StatusNotFound},
		{"http://" + metricsAddr + "/metrics", "", http.StatusUnauthorized},
		{"http://" + metricsAddr + "/metrics", metricsToken, http.StatusOK},
	} {
		mreq, _ := http.NewRequest("GET", tc.url, nil)
		if tc.token != "" {
			mreq.Header.Set("Authorization", "Bearer "+tc.token)
		}
		mres, err := http.DefaultClient.Do(mreq)
		if err != nil {
			t.Fatal(err)
		}
		mres.Body.Close()
		if mres.StatusCode != tc.want {
			t.Fatalf("GET %s (token %v): %d, want %d", tc.url, tc.token != "", mres.StatusCode, tc.want)
		}
	}
	// An open event stream must not hold up the shutdown.
	sreq, _ := http.NewRequest("GET", base+"/api/integrations/whatsapp/events", nil)
	sreq.Header.Set("Authorization", "Bearer "+strings.TrimSpace(tok.String()))
	sres, err := http.DefaultClient.Do(sreq)
	if err != nil {
		t.Fatal(err)
	}
	defer sres.Body.Close()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(shutdownTimeout - time.Second):
		t.Fatal("shutdown held up (by the open event stream?)")
	}
	l := logs.String()
	if !strings.Contains(l, `"msg":"api listening"`) || !strings.Contains(l, addr) {
		t.Fatalf("no start line with the address:\n%s", l)
	}
	if !strings.Contains(l, `"level":"WARN","msg":"JWT_AUDIENCE is unset`) {
		t.Fatalf("no warning that JWT_AUDIENCE is unset:\n%s", l)
	}
	if strings.Contains(l, metricsToken) {
		t.Fatal("METRICS_TOKEN was logged")
	}
	if strings.Contains(l, secret) || strings.Contains(l, monitorPass) || strings.Contains(l, strings.TrimSpace(tok.String())) {
		t.Fatal("a secret or token was logged")
	}
}

// waitReady waits until the API at base answers /readyz, failing if run
// (whose result arrives on done) returns first.
func waitReady(t *testing.T, base string, done <-chan error, logs *testfactory.LogBuffer) {
	t.Helper()
	err := testfactory.Poll(60*time.Second, 100*time.Millisecond, func() (bool, string) {
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\n%s", err, logs.String())
		default:
		}
		res, err := http.Get(base + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		res.Body.Close()
		return res.StatusCode == 200, fmt.Sprint(res.StatusCode)
	})
	if err != nil {
		t.Fatalf("not ready: %v\n%s", err, logs.String())
	}
}

// TestMonitorOnItsOwnAddress: with MONITOR_ADDR, asynqmon is served there
// (behind its basic auth, read-only) and the public port answers 404 at
// /monitor, so the operator UI can stay off the internet-facing listener.
func TestMonitorOnItsOwnAddress(t *testing.T) {
	t.Parallel()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	monAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	env := map[string]string{
		"JWT_SECRET": secret, "DATABASE_URL": testenv.NewDatabase(t), "REDIS_URL": testenv.NewRedisDB(t).URL(),
		"HTTP_ADDR": addr, "MONITOR_ADDR": monAddr, "MONITOR_PASSWORD": monitorPass, "QR_WAIT": "0s",
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testfactory.LogBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"api"}, envOf(env), logs, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	waitReady(t, "http://"+addr, done, logs)

	get := func(method, url string) int {
		t.Helper()
		req, _ := http.NewRequest(method, url, nil)
		req.SetBasicAuth("admin", monitorPass)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if got := get("GET", "http://"+monAddr+"/monitor"); got != http.StatusOK {
		t.Fatalf("GET /monitor on MONITOR_ADDR: %d, want 200", got)
	}
	if got := get("GET", "http://"+monAddr+"/monitor/api/queues"); got != http.StatusOK {
		t.Fatalf("GET /monitor/api/queues on MONITOR_ADDR: %d, want 200", got)
	}
	if got := get("POST", "http://"+monAddr+"/monitor/api/queues/wa:shared:pause"); got != http.StatusMethodNotAllowed {
		t.Fatalf("pause on MONITOR_ADDR: %d, want 405 (read-only by default)", got)
	}
	for _, p := range []string{"/monitor", "/monitor/api/queues"} {
		if got := get("GET", "http://"+addr+p); got != http.StatusNotFound {
			t.Fatalf("GET %s on HTTP_ADDR: %d, want 404 when MONITOR_ADDR is set", p, got)
		}
	}
	if got := get("GET", "http://"+monAddr+"/healthz"); got != http.StatusNotFound {
		t.Fatalf("the monitor's address serves the API: /healthz %d", got)
	}
}

// Not parallel: it shortens the package's retry window, and parallel tests
// only resume once the sequential ones are done.
func TestUnreachablePostgresExits1(t *testing.T) {
	port := testenv.FreePort(t) // nothing listens there
	env := map[string]string{
		"JWT_SECRET": secret, "DATABASE_URL": fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?sslmode=disable", port),
	}
	old := migrateRetryWindow
	migrateRetryWindow = 2 * time.Second
	defer func() { migrateRetryWindow = old }()
	logs := &testfactory.LogBuffer{}
	err := run(context.Background(), []string{"api"}, envOf(env), logs, io.Discard)
	if cli.ExitCode(err) != 1 {
		t.Fatalf("exit code %d (%v), want 1", cli.ExitCode(err), err)
	}
	if !strings.Contains(logs.String(), "retrying the migrations") {
		t.Fatalf("no retry was logged:\n%s", logs.String())
	}
}

// The start warns when JWT_AUDIENCE is unset, and only then.
func TestWarnsWhenAudienceUnset(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		audience string
		warn     bool
	}{{"", true}, {"wasessions-api", false}} {
		var out bytes.Buffer
		warnWeakSettings(slog.New(slog.NewJSONHandler(&out, nil)), config.Config{JWTAudience: tc.audience})
		if got := strings.Contains(out.String(), `"level":"WARN","msg":"JWT_AUDIENCE is unset`); got != tc.warn {
			t.Fatalf("JWT_AUDIENCE=%q: warned=%v, want %v\n%s", tc.audience, got, tc.warn, out.String())
		}
	}
}
