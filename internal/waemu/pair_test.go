package waemu_test

import (
	"context"
	"testing"

	"go.mau.fi/whatsmeow/types/events"

	"wasessions/internal/waemu"
)

func TestQRPairingThenLoginFromStore(t *testing.T) {
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	ctx := context.Background()

	c, jid := pairQR(t, emu, container, "+15551234567", "Ana")
	if jid != "15551234567:1@s.whatsapp.net" {
		t.Fatalf("paired JID %s, want 15551234567:1@s.whatsapp.net", jid)
	}
	ps := c.wait("PairSuccess", isPairSuccess).(*events.PairSuccess)
	if ps.ID.String() != jid || ps.BusinessName != "Ana" {
		t.Fatalf("PairSuccess = %+v, want ID %s and BusinessName Ana", ps, jid)
	}
	if c.Store.ID == nil || c.Store.ID.String() != jid || c.Store.BusinessName != "Ana" || c.Store.LID.IsEmpty() {
		t.Fatalf("store after pairing: ID %v, LID %v, BusinessName %q", c.Store.ID, c.Store.LID, c.Store.BusinessName)
	}
	devs := emu.Devices()
	if len(devs) != 1 || devs[0].JID != jid || devs[0].Phone != "+15551234567" || devs[0].Name != "Ana" || !devs[0].Connected {
		t.Fatalf("Devices() = %+v", devs)
	}
	if devs[0].LID != c.Store.LID.String() {
		t.Fatalf("emulator LID %s, client LID %s", devs[0].LID, c.Store.LID)
	}
	c.assertHealthy()
	c.Disconnect()
	eventually(t, "the emulator sees the client gone", func() bool { return emu.Stats().Connections == 0 })

	// A new client from the stored device logs in without a QR code.
	dev, err := container.GetDevice(ctx, *c.Store.ID)
	if err != nil || dev == nil {
		t.Fatalf("stored device: %v, %v", dev, err)
	}
	c2 := newClient(t, emu, dev)
	if err := c2.Connect(); err != nil {
		t.Fatal(err)
	}
	c2.wait("Connected from the stored device", isConnected)
	if !c2.IsLoggedIn() {
		t.Fatal("client not logged in after Connected")
	}
	st := emu.Stats()
	if st.Pairings != 1 || st.Logins != 2 || st.Connections != 1 || st.Conflicts != 0 {
		t.Fatalf("stats = %+v, want 1 pairing, 2 logins, 1 connection, 0 conflicts", st)
	}
	d, err := emu.Device(jid)
	if err != nil || !d.Connected || d.PreKeys < 5 {
		t.Fatalf("Device(%s) = %+v, %v; want connected with prekeys", jid, d, err)
	}
	c2.assertHealthy()
}
