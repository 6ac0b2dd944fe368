// Package cli holds what every program's main shares, so that the four
// programs (api, worker, scheduler, waemu) have one shape: main is
// Main(name, run), and run(ctx, args, getenv, stdout, stderr) is the whole
// program with its environment passed in (testable: it returns errors, it
// never calls os.Exit). An operator can tell "fix your configuration" (2)
// from "something failed" (1) by the exit code, and `-h` prints the usage
// and exits 0 on every program.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Run is a program's body: args are the whole command line (args[0] is the
// program's name, as in os.Args), getenv reads the environment, logs go to
// stdout and usage text to stderr. It returns when ctx ends (SIGINT or
// SIGTERM), nil after a clean stop.
type Run func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error

// Main runs run with the process's arguments, environment and streams,
// with a context that ends on SIGINT or SIGTERM, prints the error it
// returns as "name: error" on stderr, and exits with ExitCode.
func Main(name string, run Run) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	}
	os.Exit(ExitCode(err))
}

// FlagSet is a program's flag set: it reports errors rather than exiting,
// and -h prints usage (a line or a paragraph: what the program is and how it
// is configured), then the flags if it has any, on stderr.
func FlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, strings.TrimRight(usage, "\n"))
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(stderr, "\nflags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

// UnlessStopped is err, or nil when ctx has ended: a program told to stop
// (SIGINT, SIGTERM) while it waited at start, e.g. for Postgres, stops
// cleanly rather than reporting what it was waiting for.
func UnlessStopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Parse parses args (without the program's name) with fs, which writes its
// usage to its output on -h or a bad flag. It returns flag.ErrHelp for -h
// (exit 0, nothing more printed), and a usage error for a bad flag or, when
// positional arguments are not allowed, for any left over.
func Parse(fs *flag.FlagSet, args []string, positional bool) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return flag.ErrHelp
		}
		return Usage(err)
	}
	if !positional && fs.NArg() > 0 {
		fs.Usage()
		return Usagef("unexpected arguments: %q", fs.Args())
	}
	return nil
}

// usageError marks an error the operator fixes in the environment or on the
// command line; restarting will not help.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// Usage marks err as a usage error (exit code 2); nil stays nil.
func Usage(err error) error {
	if err == nil {
		return nil
	}
	return usageError{err}
}

// Usagef is Usage(fmt.Errorf(format, args...)).
func Usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// ExitCode is 0 for nil and for flag.ErrHelp (the usage was asked for), 2
// for a usage error (like the flag package), 1 otherwise.
func ExitCode(err error) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		return 2
	default:
		return 1
	}
}
