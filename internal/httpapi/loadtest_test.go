//go:build loadtest

package httpapi_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLoadWithWrk measures GET /status over real sockets with wrk, next to
// a bare fiber handler on the same machine. It runs only when asked:
//
//	go test -tags loadtest -run TestLoadWithWrk -v -count=1 ./internal/httpapi/
//
// WRK_ARGS overrides wrk's load shape (default "-t2 -c64 -d15s"),
// WRK_ROUNDS the number of rounds (default 3; each round runs both
// targets, in alternating order).
//
// Besides wrk's requests per second, each run reports the CPU time one
// request cost each party: this process (the server under load; the other
// one is idle), the Postgres backends of the test's database, and wrk.
// On a machine shared with other work, requests per second move with
// everyone else's load; CPU per request is what the code decides.
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
	rounds := 3
	if v := os.Getenv("WRK_ROUNDS"); v != "" {
		if rounds, err = strconv.Atoi(v); err != nil || rounds < 1 {
			t.Fatalf("WRK_ROUNDS=%q: want a positive number", v)
		}
	}
	pool := e.store.Pool()
	runWrk := func(name string, args ...string) float64 {
		pg0 := backendCPU(t, pool, nil)
		self0 := processCPU(t)
		cmd := exec.CommandContext(context.Background(), wrk, append(append(append([]string{}, shape...), "--latency"), args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("wrk %s: %v\n%s", name, err, out)
		}
		self := processCPU(t) - self0
		pg := backendCPU(t, pool, pg0)
		wrkCPU := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		shown := strings.ReplaceAll(strings.Join(args, " "), tok, "$TOKEN")
		if strings.Contains(string(out), "Non-2xx") {
			t.Fatalf("%s: some answers were not 2xx\n%s", name, out)
		}
		rps, n := wrkFigures(t, string(out))
		per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
		t.Logf("== %s: wrk %s --latency %s\n%s", name, strings.Join(shape, " "), shown, out)
		t.Logf("FIGURE %s: %.0f requests/s; CPU per request: server %.1f µs, postgres %.1f µs, wrk %.1f µs",
			name, rps, per(self), per(pg.total()), per(wrkCPU))
		return rps
	}
	// Side by side, alternating (bare, status, status, bare, ...), so a
	// change in the machine's load weighs on both alike.
	auth := []string{"-H", "Authorization: Bearer " + tok}
	var bareRPS, statusRPS, ratios []float64
	for round := 0; round < rounds; round++ {
		var b, s float64
		pair := []func(){
			func() { b = runWrk("bare fiber (JWT + one indexed SELECT)", append(auth, bareBase+"/bare")...) },
			func() { s = runWrk("GET /status", append(auth, apiBase+statusPath)...) },
		}
		if round%2 == 1 {
			pair[0], pair[1] = pair[1], pair[0]
		}
		for _, run := range pair {
			run()
		}
		bareRPS, statusRPS, ratios = append(bareRPS, b), append(statusRPS, s), append(ratios, s/b)
		t.Logf("FIGURE round %d: bare %.0f, GET /status %.0f requests/s: status/bare = %.2f", round+1, b, s, s/b)
	}
	t.Logf("FIGURE %d rounds: median requests/s bare %.0f, GET /status %.0f; median of the rounds' status/bare = %.2f (%s)",
		rounds, median(bareRPS), median(statusRPS), median(ratios), fmtAll(ratios))
}

// wrkFigures are wrk's "Requests/sec:" figure and its count of requests.
func wrkFigures(t *testing.T, out string) (rps float64, requests int) {
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "Requests/sec:"); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("wrk's Requests/sec %q: %v", rest, err)
			}
			rps = v
		}
		if strings.Contains(line, " requests in ") { // "123456 requests in 15.00s, 12.34MB read"
			v, err := strconv.Atoi(strings.Fields(line)[0])
			if err != nil {
				t.Fatalf("wrk's request count %q: %v", line, err)
			}
			requests = v
		}
	}
	if rps == 0 || requests == 0 {
		t.Fatalf("no Requests/sec or request count in wrk's output:\n%s", out)
	}
	return rps, requests
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtAll(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	return strings.Join(parts, ", ")
}
