//go:build loadtest

package httpapi_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestLoadWithWrk measures GET /status over real sockets with wrk, next to
// a bare fiber handler on the same machine. It runs only when asked:
//
//	WASESSIONS_LOADTEST=1 go test -run TestLoadWithWrk -v -count=1 ./internal/httpapi/
//
// WRK_ARGS overrides wrk's load shape (default "-t2 -c64 -d15s").
func TestLoadWithWrk(t *testing.T) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Fatalf("wrk is not installed (apt-get install wrk): %v", err)
	}
	e, tok := benchEnv(t)
	apiBase := e.serve()

	bare := bareApp()
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
	runWrk := func(name string, args ...string) {
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
	}
	runWrk("bare fiber", bareBase+"/bare")
	runWrk("GET /status", "-H", "Authorization: Bearer "+tok, apiBase+statusPath)
}
