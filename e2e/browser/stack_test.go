package browser

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"wasessions/e2e/harness"
	"wasessions/internal/testfactory"
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

// waitDeviceGone waits until the emulator no longer lists device jid (the
// phone lost the linked device); when says after what.
func (s *stack) waitDeviceGone(t *testing.T, jid, when string) {
	t.Helper()
	testfactory.WaitFor(t, "the emulator to forget device "+jid+" "+when, 15*time.Second, func() (bool, string) {
		jids, err := s.devices()
		return err == nil && !slices.Contains(jids, jid), fmt.Sprintf("devices %v (err %v)", jids, err)
	})
}
