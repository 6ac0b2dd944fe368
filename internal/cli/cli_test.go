package cli

import (
	"errors"
	"flag"
	"fmt"
	"testing"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"success", nil, 0},
		{"failure", errors.New("boom"), 1},
		{"usage", Usage(errors.New("bad flag")), 2},
		{"usagef", Usagef("JWT_SECRET: %s", "missing"), 2},
		{"wrapped usage", fmt.Errorf("start: %w", Usage(errors.New("bad"))), 2},
		{"usage of nil", Usage(nil), 0},
		{"help", flag.ErrHelp, 0},
		{"wrapped help", fmt.Errorf("token: %w", flag.ErrHelp), 0},
	}
	for _, tt := range tests {
		if got := ExitCode(tt.err); got != tt.want {
			t.Errorf("%s: ExitCode = %d, want %d", tt.name, got, tt.want)
		}
	}
	if err := Usagef("x %d", 1); err.Error() != "x 1" {
		t.Errorf("message %q", err)
	}
}
