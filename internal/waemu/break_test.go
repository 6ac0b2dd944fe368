package waemu_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"wasessions/internal/testfactory"
	"wasessions/internal/waemu"
)

func storedDeviceGone(t *testing.T, container *sqlstore.Container, jid string) func() bool {
	return func() bool {
		parsed, err := types.ParseJID(jid)
		if err != nil {
			t.Fatal(err)
		}
		dev, err := container.GetDevice(context.Background(), parsed)
		if err != nil {
			t.Fatalf("GetDevice: %v", err)
		}
		return dev == nil
	}
}

func TestUnlink(t *testing.T) {
	tests := []struct {
		name          string
		connected     bool // is the client connected when the phone unlinks it?
		wantOnConnect bool // LoggedOut.OnConnect: false for a live socket, true for a refused login
	}{
		{name: "connected client is logged out", connected: true, wantOnConnect: false},
		{name: "later login fails with 401", connected: false, wantOnConnect: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			emu := startEmu(t, waemu.Options{})
			container := newContainer(t)
			c, jid := pairQR(t, emu, container, "", "")
			if !tt.connected {
				c.Disconnect()
				testfactory.EventuallyIn(t, "the socket is closed", waitTimeout, func() bool { return emu.Stats().Connections == 0 })
			}
			if err := emu.Unlink(jid); err != nil {
				t.Fatalf("Unlink: %v", err)
			}
			if devs := emu.Devices(); len(devs) != 0 {
				t.Fatalf("Devices() after unlink = %+v", devs)
			}
			if !tt.connected {
				parsed, _ := types.ParseJID(jid)
				dev, err := container.GetDevice(context.Background(), parsed)
				if err != nil || dev == nil {
					t.Fatalf("stored device before the login: %v, %v", dev, err)
				}
				c = newClient(t, emu, dev)
				if err := c.Connect(); err != nil {
					t.Fatal(err)
				}
			}
			lo := c.wait("LoggedOut", isLoggedOut).(*events.LoggedOut)
			if lo.OnConnect != tt.wantOnConnect || lo.Reason != events.ConnectFailureLoggedOut {
				t.Fatalf("LoggedOut = %+v, want OnConnect %v, reason 401", lo, tt.wantOnConnect)
			}
			// whatsmeow dispatches the event before it deletes its keys.
			testfactory.EventuallyIn(t, "the client deleted its keys", waitTimeout, storedDeviceGone(t, container, jid))
			testfactory.EventuallyIn(t, "the socket is closed", waitTimeout, func() bool { return emu.Stats().Connections == 0 })
			if _, err := emu.Device(jid); !errors.Is(err, waemu.ErrUnknownDevice) {
				t.Fatalf("Device after unlink: %v, want ErrUnknownDevice", err)
			}
			if err := emu.Unlink(jid); !errors.Is(err, waemu.ErrUnknownDevice) {
				t.Fatalf("second Unlink: %v, want ErrUnknownDevice", err)
			}
			if n := c.count(isConnected); tt.connected && n != 1 || !tt.connected && n != 0 {
				t.Fatalf("%d Connected events", n)
			}
		})
	}
}

func TestDropReconnects(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	c, jid := pairQR(t, emu, container, "", "")

	dropped, err := emu.Drop(jid)
	if err != nil || !dropped {
		t.Fatalf("Drop = %v, %v; want true", dropped, err)
	}
	c.wait("Disconnected", isDisconnected)
	c.waitN("Connected again", 2, isConnected)
	if st := emu.Stats(); st.Logins != 2 || st.Connections != 1 || st.Conflicts != 0 {
		t.Fatalf("stats = %+v, want 2 logins, 1 connection, no conflict", st)
	}
	if d, err := emu.Device(jid); err != nil || !d.Connected {
		t.Fatalf("Device = %+v, %v; want connected", d, err)
	}
	if _, err := emu.Drop("15550000000:9@s.whatsapp.net"); !errors.Is(err, waemu.ErrUnknownDevice) {
		t.Fatalf("Drop of an unknown device: %v", err)
	}
	c.Disconnect()
	testfactory.EventuallyIn(t, "the socket is closed", waitTimeout, func() bool { return emu.Stats().Connections == 0 })
	if dropped, err := emu.Drop(jid); err != nil || dropped {
		t.Fatalf("Drop of an offline device = %v, %v; want false, nil", dropped, err)
	}
}

func TestSecondLoginReplacesFirst(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	first, jid := pairQR(t, emu, container, "", "")

	// The same device, loaded again from the store, as a second worker would.
	dev, err := container.GetDevice(context.Background(), *first.Store.ID)
	if err != nil || dev == nil {
		t.Fatalf("stored device: %v, %v", dev, err)
	}
	second := newClient(t, emu, dev)
	if err := second.Connect(); err != nil {
		t.Fatal(err)
	}
	second.wait("Connected (second)", isConnected)
	first.wait("StreamReplaced (first)", isStreamReplaced)
	testfactory.EventuallyIn(t, "the first socket is closed", waitTimeout, func() bool { return emu.Stats().Connections == 1 })

	st := emu.Stats()
	if st.Conflicts != 1 || st.Logins != 2 {
		t.Fatalf("stats = %+v, want 1 conflict and 2 logins", st)
	}
	d, err := emu.Device(jid)
	if err != nil || d.Conflicts != 1 || !d.Connected {
		t.Fatalf("Device = %+v, %v; want 1 conflict, connected", d, err)
	}
	if !second.IsLoggedIn() || first.IsLoggedIn() {
		t.Fatalf("logged in: first %v, second %v; want only the second", first.IsLoggedIn(), second.IsLoggedIn())
	}
	second.assertHealthy()
}

func TestRefuseLoginsBacksOff(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	c, jid := pairQR(t, emu, container, "", "")
	c.Disconnect()
	testfactory.EventuallyIn(t, "the socket is closed", waitTimeout, func() bool { return emu.Stats().Connections == 0 })

	emu.RefuseLogins(time.Hour)
	dev, err := container.GetDevice(context.Background(), *c.Store.ID)
	if err != nil || dev == nil {
		t.Fatalf("stored device: %v, %v", dev, err)
	}
	c2 := newClient(t, emu, dev)
	if err := c2.Connect(); err != nil {
		t.Fatal(err)
	}
	// Two refused attempts: whatsmeow retries by itself, with growing delays.
	c2.waitN("second refused login", 2, isDisconnected)
	if n := emu.Stats().RefusedLogins; n < 2 {
		t.Fatalf("%d refused logins, want at least 2", n)
	}
	if n := c2.count(isConnected); n != 0 {
		t.Fatalf("%d Connected events while refusing", n)
	}
	emu.RefuseLogins(0)
	c2.wait("Connected after refusal ends", isConnected)
	if n := c2.count(isLoggedOut); n != 0 {
		t.Fatal("a 503 refusal logged the device out")
	}
	if d, err := emu.Device(jid); err != nil || !d.Connected {
		t.Fatalf("Device = %+v, %v; want connected", d, err)
	}
}

func TestClientLogoutRemovesDevice(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	c, jid := pairQR(t, emu, container, "", "")
	if err := c.Logout(context.Background()); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	if _, err := emu.Device(jid); !errors.Is(err, waemu.ErrUnknownDevice) {
		t.Fatalf("Device after logout: %v, want ErrUnknownDevice", err)
	}
	testfactory.EventuallyIn(t, "the socket is closed", waitTimeout, func() bool { return emu.Stats().Connections == 0 })
	testfactory.EventuallyIn(t, "the client deleted its keys", waitTimeout, storedDeviceGone(t, container, jid))
	c.assertHealthy()
}

func TestKeepalivesAnswered(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	c, _ := pairQR(t, emu, container, "", "")
	before := emu.Stats().Keepalives
	testfactory.EventuallyIn(t, "two keepalives answered", waitTimeout, func() bool { return emu.Stats().Keepalives >= before+2 })
	if n := c.count(func(e any) bool { _, ok := e.(*events.KeepAliveTimeout); return ok }); n != 0 {
		t.Fatalf("%d keepalive timeouts", n)
	}
	c.assertHealthy()
}
