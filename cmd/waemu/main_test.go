package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"wasessions/internal/cli"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
)

func noEnv(string) string { return "" }

func TestRunRejectsBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{name: "unknown flag", args: []string{"-nope"}},
		{name: "positional argument", args: []string{"extra"}},
		{name: "seed not hex", args: []string{"-key-seed", "xyz"}},
		{name: "zero refs", args: []string{"-qr-refs", "0"}},
		{name: "refs not a number", args: []string{"-qr-refs", "six"}},
		{name: "negative QR timeout", args: []string{"-qr-timeout", "-1s"}},
		{name: "QR timeout without unit", args: []string{"-qr-timeout", "5"}},
		{name: "bad log level", args: []string{"-log-level", "loud"}},
		{name: "empty listen", args: []string{"-listen", ""}},
		{name: "bad env default", env: map[string]string{"WAEMU_QR_REFS": "many"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr strings.Builder
			getenv := func(k string) string { return tt.env[k] }
			err := run(context.Background(), append([]string{"waemu"}, tt.args...), getenv, io.Discard, &stderr)
			if err == nil {
				t.Fatal("run accepted bad flags")
			}
			if code := cli.ExitCode(err); code != 2 {
				t.Fatalf("exit code %d for %v, want 2", code, err)
			}
		})
	}
}

// -h prints the usage and exits 0; stray arguments exit 2.
func TestCommandLine(t *testing.T) {
	// Ports of its own, should a broken -h start the emulator.
	env := map[string]string{"WAEMU_LISTEN": "127.0.0.1:0", "WAEMU_CONTROL": "127.0.0.1:0"}
	testfactory.ProgramShape(t, "waemu", run, func(k string) string { return env[k] })
}

// TestRunServesAndSavesOnShutdown starts the program on free ports (the
// listen address from the environment, the rest from flags), uses its
// control API and its profiler (-pprof: there, not on the control API),
// and stops it as a signal would.
func TestRunServesAndSavesOnShutdown(t *testing.T) {
	statePath := filepath.Join(t.TempDir(), "state.json")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, w := io.Pipe()
	env := map[string]string{"WAEMU_LISTEN": "127.0.0.1:0"}
	pprofAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"waemu", "-pprof", pprofAddr, "-control", "127.0.0.1:0", "-state", statePath, "-key-seed", "00112233445566778899aabbccddeeff", "-qr-refs", "1", "-qr-timeout", "3s"},
			func(k string) string { return env[k] }, w, io.Discard)
		w.Close()
	}()

	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("no ready line: %v (run: %v)", err, <-done)
	}
	go io.Copy(io.Discard, out)
	var r ready
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("ready line %q: %v", line, err)
	}
	if !strings.HasPrefix(r.Listen, "127.0.0.1:") || strings.HasSuffix(r.Listen, ":0") || len(r.PubKey) != 64 {
		t.Fatalf("ready line %+v", r)
	}

	resp, err := http.Get("http://" + r.Control + "/pubkey")
	if err != nil {
		t.Fatal(err)
	}
	var pk struct{ Pubkey string }
	err = json.NewDecoder(resp.Body).Decode(&pk)
	resp.Body.Close()
	if err != nil || pk.Pubkey != r.PubKey {
		t.Fatalf("GET /pubkey = %+v, %v; want %s", pk, err, r.PubKey)
	}
	for _, c := range []struct {
		url  string
		want int
	}{
		{"http://" + pprofAddr + "/debug/pprof/goroutine?debug=1", http.StatusOK},
		{"http://" + r.Control + "/debug/pprof/goroutine?debug=1", http.StatusNotFound},
	} {
		resp, err := http.Get(c.url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want || (c.want == http.StatusOK && !strings.Contains(string(body), "goroutine profile")) {
			t.Fatalf("GET %s: %d %.80q, want %d", c.url, resp.StatusCode, body, c.want)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after shutdown: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
	data, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatalf("state not saved: %v", err)
	}
	if !strings.Contains(string(data), `"key_seed": "00112233445566778899aabbccddeeff"`) {
		t.Fatalf("state file lacks the key seed:\n%s", data)
	}
}
