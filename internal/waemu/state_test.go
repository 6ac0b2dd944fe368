package waemu_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"wasessions/internal/waemu"
)

func TestStateSurvivesRestart(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "state.json")
	container := newContainer(t)
	ctx := context.Background()

	emu1 := startEmu(t, waemu.Options{StatePath: path})
	c, jid := pairQR(t, emu1, container, "+15550001111", "Persisted")
	gone, goneJID := pairQR(t, emu1, container, "+15550002222", "Unlinked later")
	c.Disconnect()
	gone.Disconnect()
	if err := emu1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("state file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, want 0600 (it holds the simulated phones' keys)", fi.Mode().Perm())
	}

	// No seed given: the restarted emulator takes it from the state file and
	// presents the same root key, so clients keep trusting it.
	emu2 := startEmu(t, waemu.Options{StatePath: path, KeySeed: []byte{}})
	if emu2.PubKey() != emu1.PubKey() {
		t.Fatal("root key changed across a restart with the same state")
	}
	d, err := emu2.Device(jid)
	if err != nil || d.Name != "Persisted" || d.Phone != "+15550001111" || d.Connected || d.PreKeys < 5 {
		t.Fatalf("restored device = %+v, %v", d, err)
	}
	dev, err := container.GetDevice(ctx, *c.Store.ID)
	if err != nil || dev == nil {
		t.Fatalf("stored device: %v, %v", dev, err)
	}
	c2 := newClient(t, emu2, dev)
	if err := c2.Connect(); err != nil {
		t.Fatal(err)
	}
	c2.wait("Connected after the emulator restarted", isConnected)
	c2.assertHealthy()

	// Changes are saved as they happen, not only at shutdown.
	if err := emu2.Unlink(goneJID); err != nil {
		t.Fatalf("Unlink: %v", err)
	}
	eventually(t, "the state file forgets the unlinked device", func() bool {
		data, err := os.ReadFile(path)
		return err == nil && strings.Contains(string(data), jid) && !strings.Contains(string(data), goneJID)
	})
	c2.Disconnect()
	if err := emu2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	emu3 := startEmu(t, waemu.Options{StatePath: path, KeySeed: []byte{}})
	if devs := emu3.Devices(); len(devs) != 1 || devs[0].JID != jid {
		t.Fatalf("devices after the second restart = %+v, want only %s", devs, jid)
	}
}
