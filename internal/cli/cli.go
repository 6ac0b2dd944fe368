// Package cli holds what every program's main shares: the mapping from the
// error run returned to the process exit code. run stays testable (it
// returns errors, it never calls os.Exit) and an operator can tell "fix
// your configuration" (2) from "something failed" (1) by the exit code.
package cli

import (
	"errors"
	"fmt"
)

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

// ExitCode is 0 for nil, 2 for a usage error (like the flag package), 1
// otherwise.
func ExitCode(err error) int {
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		return 2
	default:
		return 1
	}
}
