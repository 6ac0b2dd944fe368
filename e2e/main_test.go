package e2e

import (
	"os"
	"testing"

	"wasessions/e2e/harness"
)

// programs are the programs this test binary runs, built the first time a
// test needs them.
var programs *harness.Binaries

func TestMain(m *testing.M) {
	os.Exit(harness.RunTests(m, func(b *harness.Binaries) { programs = b }))
}
