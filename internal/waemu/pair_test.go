package waemu_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	wastore "go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types/events"

	"wasessions/internal/testfactory"
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
	// What the phone lists for the device is what the client announced in
	// its registration payload.
	if want, wantP := wastore.DeviceProps.GetOs(), wastore.DeviceProps.GetPlatformType().String(); devs[0].OS != want || devs[0].Platform != wantP {
		t.Fatalf("the emulator lists the device as %q/%q, the client announced %q/%q", devs[0].OS, devs[0].Platform, want, wantP)
	}
	c.assertHealthy()
	c.Disconnect()
	testfactory.EventuallyIn(t, "the emulator sees the client gone", waitTimeout, func() bool { return emu.Stats().Connections == 0 })

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

func TestPhoneCodePairing(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	ctx := context.Background()

	c := newClient(t, emu, container.NewDevice())
	qr, _ := firstQR(t, c)
	code, err := c.PairPhone(ctx, "+1 555 765 4321", true, whatsmeow.PairClientChrome, "Chrome (Linux)")
	if err != nil {
		t.Fatalf("PairPhone: %v", err)
	}
	jid, err := emu.PairCode(ctx, code, "", "Bob")
	if err != nil {
		t.Fatalf("PairCode(%s): %v", code, err)
	}
	if jid != "15557654321:1@s.whatsapp.net" {
		t.Fatalf("paired JID %s, want the number the client asked for", jid)
	}
	if item := nextQR(t, c, qr); item != whatsmeow.QRChannelSuccess {
		t.Fatalf("QR channel after code pairing: %+v", item)
	}
	c.wait("Connected", isConnected)
	if ps := c.wait("PairSuccess", isPairSuccess).(*events.PairSuccess); ps.BusinessName != "Bob" {
		t.Fatalf("PairSuccess = %+v", ps)
	}
	if d, err := emu.Device(jid); err != nil || d.Name != "Bob" || d.Phone != "+15557654321" || !d.Connected {
		t.Fatalf("Device = %+v, %v", d, err)
	}
	if _, err := emu.PairCode(ctx, code, "", ""); !errors.Is(err, waemu.ErrUnknownCode) {
		t.Fatalf("PairCode again after pairing: %v, want ErrUnknownCode", err)
	}
	c.assertHealthy()
}

func TestPhoneCodeWrongThenRight(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	ctx := context.Background()

	c := newClient(t, emu, container.NewDevice())
	firstQR(t, c)
	code, err := c.PairPhone(ctx, "+15557654322", false, whatsmeow.PairClientChrome, "Chrome (Linux)")
	if err != nil {
		t.Fatalf("PairPhone: %v", err)
	}
	wrong := []byte(code)
	if wrong[0] == 'A' {
		wrong[0] = 'B'
	} else {
		wrong[0] = 'A'
	}
	if _, err := emu.PairCode(ctx, string(wrong), "+15557654322", ""); !errors.Is(err, waemu.ErrWrongCode) {
		t.Fatalf("PairCode with a wrong code: %v, want ErrWrongCode", err)
	}
	jid, err := emu.PairCode(ctx, code, "+15557654322", "")
	if err != nil {
		t.Fatalf("PairCode with the right code after a wrong one: %v", err)
	}
	c.wait("Connected", isConnected)
	if st := emu.Stats(); st.Pairings != 1 || jid != "15557654322:1@s.whatsapp.net" {
		t.Fatalf("stats %+v, jid %s", st, jid)
	}
}

func TestPairCodeRefused(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	ctx := context.Background()

	// Two clients wait for code pairings of different numbers.
	for _, phone := range []string{"+15550000001", "+15550000002"} {
		c := newClient(t, emu, container.NewDevice())
		firstQR(t, c)
		if _, err := c.PairPhone(ctx, phone, false, whatsmeow.PairClientChrome, "Chrome (Linux)"); err != nil {
			t.Fatalf("PairPhone(%s): %v", phone, err)
		}
	}
	tests := []struct {
		name, code, phone string
		want              error
	}{
		{"too short", "ABCD-EFG", "", waemu.ErrMalformedCode},
		{"outside the alphabet", "ABCD-EFG0", "", waemu.ErrMalformedCode},
		{"bad phone", "ABCD-EFGH", "+0123", waemu.ErrBadPhone},
		{"no pairing for that number", "ABCD-EFGH", "+15550000003", waemu.ErrUnknownCode},
		{"two pending and no number", "ABCD-EFGH", "", waemu.ErrAmbiguousCode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := emu.PairCode(ctx, tt.code, tt.phone, ""); !errors.Is(err, tt.want) {
				t.Fatalf("PairCode(%q, %q) = %v, want %v", tt.code, tt.phone, err, tt.want)
			}
		})
	}
}

func TestQRTimeout(t *testing.T) {
	tests := []struct {
		name string
		opts waemu.Options
	}{
		// whatsmeow shows a single code for 20 s, then gives up itself.
		{name: "client runs out of one ref", opts: waemu.Options{QRRefs: 1}},
		// The emulator closes the unpaired socket long before the codes
		// run out; whatsmeow reports that as a timeout too.
		{name: "server QR timeout", opts: waemu.Options{QRTimeout: 3 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			emu := startEmu(t, tt.opts)
			container := newContainer(t)
			c := newClient(t, emu, container.NewDevice())
			qr, code := firstQR(t, c)
			codes := 1
			for {
				item := nextQR(t, c, qr)
				if item.Event == whatsmeow.QRChannelEventCode {
					codes++
					continue
				}
				if item != whatsmeow.QRChannelTimeout {
					t.Fatalf("QR channel ended with %+v, want timeout", item)
				}
				break
			}
			if codes != 1 {
				t.Fatalf("%d codes before the timeout, want 1", codes)
			}
			testfactory.EventuallyIn(t, "the socket is closed", waitTimeout, func() bool { return emu.Stats().Connections == 0 })
			if _, err := emu.Scan(context.Background(), code, "", ""); !errors.Is(err, waemu.ErrQRExpired) {
				t.Fatalf("Scan after the timeout: %v, want ErrQRExpired", err)
			}
			if c.Store.ID != nil || len(emu.Devices()) != 0 {
				t.Fatalf("a device was linked: client %v, emulator %+v", c.Store.ID, emu.Devices())
			}
		})
	}
}

func TestScanRefused(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	ctx := context.Background()

	c := newClient(t, emu, container.NewDevice())
	qr, code := firstQR(t, c)
	other := newClient(t, emu, container.NewDevice())
	_, otherCode := firstQR(t, other)
	p := strings.Split(code, ",")
	o := strings.Split(otherCode, ",")
	short := base64.StdEncoding.EncodeToString(make([]byte, 16))

	tests := []struct {
		name, qr string
		want     error
	}{
		{"empty", "", waemu.ErrMalformedQR},
		{"three parts", strings.Join(p[:3], ","), waemu.ErrMalformedQR},
		{"five parts", code + ",x", waemu.ErrMalformedQR},
		{"not base64", strings.Join([]string{p[0], "!!!", p[2], p[3]}, ","), waemu.ErrMalformedQR},
		{"short key", strings.Join([]string{p[0], short, p[2], p[3]}, ","), waemu.ErrMalformedQR},
		{"keys of another client", strings.Join([]string{p[0], o[1], o[2], o[3]}, ","), waemu.ErrMalformedQR},
		{"unknown ref", strings.Join([]string{"2@unknown", p[1], p[2], p[3]}, ","), waemu.ErrUnknownQR},
		{"bad phone", code, waemu.ErrBadPhone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			phone := ""
			if tt.want == waemu.ErrBadPhone {
				phone = "+12ab"
			}
			if _, err := emu.Scan(ctx, tt.qr, phone, ""); !errors.Is(err, tt.want) {
				t.Fatalf("Scan = %v, want %v", err, tt.want)
			}
		})
	}

	// None of that spent the code: it still pairs, once.
	jid, err := emu.Scan(ctx, code, "", "")
	if err != nil {
		t.Fatalf("Scan of the real code: %v", err)
	}
	if item := nextQR(t, c, qr); item != whatsmeow.QRChannelSuccess {
		t.Fatalf("QR channel: %+v", item)
	}
	c.wait("Connected", isConnected)
	if _, err := emu.Scan(ctx, code, "", ""); !errors.Is(err, waemu.ErrQRUsed) {
		t.Fatalf("replayed Scan: %v, want ErrQRUsed", err)
	}
	d, err := emu.Device(jid)
	if err != nil || !strings.HasPrefix(d.Phone, "+1555") || len(d.Phone) != 12 || !strings.HasPrefix(d.Name, "Emu User ") {
		t.Fatalf("generated phone and name: %+v, %v", d, err)
	}
	if st := emu.Stats(); st.Pairings != 1 {
		t.Fatalf("stats %+v, want 1 pairing", st)
	}
	c.assertHealthy()
}

func TestQRRefsCount(t *testing.T) {
	t.Parallel()
	for _, refs := range []int{1, 3, waemu.DefaultQRRefs} {
		emu := startEmu(t, waemu.Options{QRRefs: refs})
		container := newContainer(t)
		c := newClient(t, emu, container.NewDevice())
		firstQR(t, c)
		qrEvt := c.wait("QR event", func(e any) bool { _, ok := e.(*events.QR); return ok }).(*events.QR)
		if len(qrEvt.Codes) != refs {
			t.Fatalf("QRRefs %d: the client got %d codes", refs, len(qrEvt.Codes))
		}
		c.Disconnect()
	}
}
