package browser

import (
	"testing"

	"wasessions/e2e/harness"
)

// stack is the harness's running deployment: the emulator, api, one worker
// (adminWorker) and the scheduler, with the harness's checks when the test
// ends (no conflict, no data race, no unexpected exit, clean stops).
type stack struct {
	*harness.Stack
}

// newStack starts the programs, the emulator with emuArgs.
func newStack(t *testing.T, emuArgs ...string) *stack {
	t.Helper()
	return &stack{harness.New(t, harness.Options{
		Binaries: programs,
		Workers:  []string{adminWorker},
		EmuArgs:  emuArgs,
		// The QR flows wait for a QR for at most this long.
		Env: map[string]string{"QR_WAIT": "3s"},
	})}
}

// devices lists the JIDs of the devices the emulator knows (linked).
func (s *stack) devices() ([]string, error) {
	ds, err := s.Phone.Devices()
	jids := make([]string, len(ds))
	for i, d := range ds {
		jids[i] = d.JID
	}
	return jids, err
}
