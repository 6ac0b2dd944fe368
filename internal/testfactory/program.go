package testfactory

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"wasessions/internal/cli"
)

// ProgramShape checks what every program (cmd/*) promises on its command
// line, through its run function: -h (and --help) print the usage on
// stderr and exit 0 without starting anything, and a stray argument or an
// unknown flag exits 2 naming it. getenv is the environment the program
// sees; a run that started anyway is stopped by the context's deadline and
// fails the test.
func ProgramShape(t *testing.T, name string, run cli.Run, getenv func(string) string) {
	t.Helper()
	tests := []struct {
		args    []string
		exit    int
		mention string
	}{
		{[]string{"-h"}, 0, "usage"},
		{[]string{"--help"}, 0, "usage"},
		{[]string{"stray-argument"}, 2, "stray-argument"},
		{[]string{"-no-such-flag"}, 2, "no-such-flag"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			err := run(ctx, append([]string{name}, tt.args...), getenv, &stdout, &stderr)
			if ctx.Err() != nil {
				t.Fatalf("%s %v started the program (it ran until the deadline): %v", name, tt.args, err)
			}
			if got := cli.ExitCode(err); got != tt.exit {
				t.Fatalf("%s %v: exit %d (%v), want %d", name, tt.args, got, err, tt.exit)
			}
			msg := strings.ToLower(stderr.String())
			if err != nil {
				msg += " " + err.Error()
			}
			if !strings.Contains(msg, tt.mention) {
				t.Fatalf("%s %v: stderr %q, error %v: does not mention %q", name, tt.args, stderr.String(), err, tt.mention)
			}
			if stdout.Len() > 0 {
				t.Fatalf("%s %v printed to stdout (where the logs go): %q", name, tt.args, stdout.String())
			}
		})
	}
}
