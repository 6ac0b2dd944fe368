package e2e

import (
	"testing"

	"wasessions/e2e/harness"
)

// stackOpts shape one test's stack (harness.Options).
type stackOpts = harness.Options

// stack is the harness's running deployment with this suite's clients of
// the API (client) and of the emulator (phone), which tests extend with
// the calls they need.
type stack struct {
	*harness.Stack
	client *apiClient
	phone  *emuClient
}

// newStack starts the programs for a test and stops them when it ends,
// with the harness's checks on the way out (no conflict, no data race, no
// unexpected exit, clean stops).
func newStack(t *testing.T, o stackOpts) *stack {
	t.Helper()
	o.Binaries = programs
	h := harness.New(t, o)
	return &stack{
		Stack:  h,
		client: &apiClient{base: h.APIBase, http: h.HTTP, signer: h.Signer},
		phone:  &emuClient{h.Phone},
	}
}
