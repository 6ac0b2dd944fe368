package e2e

import (
	"wasessions/e2e/harness"
)

// emuClient is the harness's client of the emulator's control API (the
// user's phone, the network, and what WhatsApp sees), with the calls that
// tests of this suite add.
type emuClient struct {
	*harness.Emulator
}
