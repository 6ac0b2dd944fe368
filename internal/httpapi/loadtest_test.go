//go:build loadtest

package httpapi_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestLoadWithWrk measures GET /status over real sockets with wrk, next to
// a bare fiber handler on the same machine. It runs only when asked:
//
//	go test -tags loadtest -run TestLoadWithWrk -v -count=1 ./internal/httpapi/
//
// WRK_ARGS overrides wrk's load shape (default "-t2 -c64 -d15s").
func TestLoadWithWrk(t *testing.T) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Fatalf("wrk is not installed (apt-get install wrk): %v", err)
	}
	e, tok := benchEnv(t)
	apiBase := e.serve()

	bare := bareApp(e)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go bare.Listener(ln)
	t.Cleanup(func() { bare.Shutdown() })
	bareBase := "http://" + ln.Addr().String()

	shape := strings.Fields(os.Getenv("WRK_ARGS"))
	if len(shape) == 0 {
		shape = []string{"-t2", "-c64", "-d15s"}
	}
	runWrk := func(name string, args ...string) float64 {
		cmd := exec.CommandContext(context.Background(), wrk, append(append(append([]string{}, shape...), "--latency"), args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("wrk %s: %v\n%s", name, err, out)
		}
		shown := strings.ReplaceAll(strings.Join(args, " "), tok, "$TOKEN")
		t.Logf("== %s: wrk %s --latency %s\n%s", name, strings.Join(shape, " "), shown, out)
		if strings.Contains(string(out), "Non-2xx") {
			t.Fatalf("%s: some answers were not 2xx", name)
		}
		return requestsPerSec(t, string(out))
	}
	// Side by side, alternating (bare, status, status, bare), so a change
	// in the machine's load during the run weighs on both alike.
	auth := []string{"-H", "Authorization: Bearer " + tok}
	var bareRPS, statusRPS float64
	for round := 0; round < 2; round++ {
		pair := []func(){
			func() { bareRPS += runWrk("bare fiber (JWT + one indexed SELECT)", append(auth, bareBase+"/bare")...) },
			func() { statusRPS += runWrk("GET /status", append(auth, apiBase+statusPath)...) },
		}
		if round == 1 {
			pair[0], pair[1] = pair[1], pair[0]
		}
		for _, run := range pair {
			run()
		}
	}
	t.Logf("FIGURE requests/s: bare %.0f, GET /status %.0f: status/bare = %.2f", bareRPS/2, statusRPS/2, statusRPS/bareRPS)
}

// requestsPerSec is wrk's "Requests/sec:" figure.
func requestsPerSec(t *testing.T, out string) float64 {
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "Requests/sec:"); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("wrk's Requests/sec %q: %v", rest, err)
			}
			return v
		}
	}
	t.Fatalf("no Requests/sec in wrk's output:\n%s", out)
	return 0
}
