package waemu_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"wasessions/internal/testfactory"
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
	testfactory.EventuallyIn(t, "the state file forgets the unlinked device", waitTimeout, func() bool {
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

// TestPeersAndSessionsSurviveRestart: with -state, peers keep their number,
// LID and keys, and both sides' Signal sessions go on after the emulator
// restarts (a lost session would make the client's next message, a "msg"
// on the old session, undecryptable).
func TestPeersAndSessionsSurviveRestart(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "state.json")
	container := newContainer(t)
	ctx := context.Background()

	emu1 := startEmu(t, waemu.Options{StatePath: path})
	c, jid := pairQR(t, emu1, container, "+15550008001", "Me")
	alice, err := emu1.AddPeer("+15557658001", "Alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendMessage(ctx, peerJID("+15557658001"), textMsg("before restart")); err != nil {
		t.Fatal(err)
	}
	id, err := emu1.SendText(ctx, alice.JID, "+15550008001", "reply before restart", "")
	if err != nil {
		t.Fatal(err)
	}
	c.wait("the reply before the restart", isMessageText("reply before restart"))
	waitDelivered(t, emu1, id)
	c.Disconnect()
	if err := emu1.Close(); err != nil {
		t.Fatal(err)
	}
	prekeys := mustDevice(t, emu1, jid).PreKeys

	emu2 := startEmu(t, waemu.Options{StatePath: path, KeySeed: []byte{}})
	if peers := emu2.Peers(); len(peers) != 1 || peers[0].JID != alice.JID || peers[0].LID != alice.LID || peers[0].Name != "Alice" {
		t.Fatalf("peers after restart = %+v, want %+v", peers, alice)
	}
	if d := mustDevice(t, emu2, jid); d.PreKeys != prekeys {
		t.Fatalf("prekeys after restart = %d, want %d", d.PreKeys, prekeys)
	}
	dev, err := container.GetDevice(ctx, *c.Store.ID)
	if err != nil {
		t.Fatal(err)
	}
	c2 := newClient(t, emu2, dev)
	if err := c2.Connect(); err != nil {
		t.Fatal(err)
	}
	c2.wait("Connected after the restart", isConnected)
	resp, err := c2.SendMessage(ctx, peerJID("+15557658001"), textMsg("after restart"))
	if err != nil {
		t.Fatalf("SendMessage after the restart: %v", err)
	}
	inbox, _ := emu2.Inbox(alice.JID)
	if len(inbox) != 1 || inbox[0].ID != resp.ID || inbox[0].Text != "after restart" {
		t.Fatalf("inbox after restart = %+v", inbox)
	}
	if _, err := emu2.SendText(ctx, alice.JID, "+15550008001", "reply after restart", ""); err != nil {
		t.Fatal(err)
	}
	c2.wait("the reply after the restart", isMessageText("reply after restart"))
	if st := emu2.Stats(); st.DecryptFailures != 0 || st.RetryReceipts != 0 {
		t.Fatalf("stats after restart = %+v", st)
	}
	if d := mustDevice(t, emu2, jid); d.PreKeys != prekeys {
		t.Fatalf("prekeys = %d, want %d: the peer started a new session instead of using the saved one", d.PreKeys, prekeys)
	}
	c2.assertHealthy()
}

func mustDevice(t *testing.T, emu *waemu.Server, jid string) waemu.DeviceInfo {
	t.Helper()
	d, err := emu.Device(jid)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
