package wa_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"go.mau.fi/whatsmeow"
	wastore "go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types/events"

	"wasessions/internal/testenv"
	"wasessions/internal/wa"
	"wasessions/internal/waemu"
	"wasessions/internal/waendpoint"
)

// emuSeed is the key seed of every emulator in this test process: whatsmeow
// trusts one root key per process.
var emuSeed = []byte("wa prekeys test: one root key per test process")

const waitFor = 30 * time.Second

// prekeyWorld is an emulator and a migrated database for pairing devices
// through Hosts.
type prekeyWorld struct {
	emu *waemu.Server
	ep  waendpoint.Endpoint
	dsn string
	log *slog.Logger
}

func newPrekeyWorld(t testing.TB) *prekeyWorld {
	t.Helper()
	_, dsn := testenv.NewStore(t) // the service's migrations and whatsmeow's schema
	emu, err := waemu.Start(context.Background(), waemu.Options{ListenAddr: "127.0.0.1:0", KeySeed: emuSeed,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	return &prekeyWorld{emu: emu, ep: waendpoint.Endpoint{Addr: emu.Addr(), RootKey: emu.PubKey()}, dsn: dsn,
		log: slog.New(slog.DiscardHandler)}
}

// open is a database handle of its own, as a new worker process has.
func (w *prekeyWorld) open(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", w.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// pair links dev through a client of h, scanning its first QR code with
// the emulator's phone, and returns the client once whatsmeow's first
// prekey upload was answered (uploaded is closed by the caller's store),
// or once the emulator holds 812 keys for it when uploaded is nil.
func (w *prekeyWorld) pair(t testing.TB, h *wa.Host, dev *wastore.Device, phone string, uploaded <-chan struct{}) *whatsmeow.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	cli, err := h.NewClient(dev, w.log, wa.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	qr, err := cli.GetQRChannel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.Connect(); err != nil {
		t.Fatal(err)
	}
	var code string
	for item := range qr {
		if item.Event == "code" {
			code = item.Code
			break
		}
		t.Fatalf("QR channel: %s (%v) before the first code", item.Event, item.Error)
	}
	jid, err := w.emu.Scan(ctx, code, phone, "Prekey Test")
	if err != nil {
		t.Fatal(err)
	}
	if uploaded != nil {
		select {
		case <-uploaded:
		case <-ctx.Done():
			t.Fatalf("%s: the prekey upload was not answered within %s", jid, waitFor)
		}
		return cli
	}
	for {
		if info, err := w.emu.Device(jid); err == nil && info.PreKeys == 812 {
			return cli
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: the emulator did not get 812 prekeys within %s", jid, waitFor)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// loadDevice is the stored device jid, as a restoring worker loads it.
func loadDevice(t testing.TB, h *wa.Host, jid string) *wastore.Device {
	t.Helper()
	dev, err := h.LoadDevice(context.Background(), jid)
	if err != nil || dev == nil {
		t.Fatalf("load device %s: %v (nil: %v)", jid, err, dev == nil)
	}
	return dev
}

// crashBeforeMark is a device container that, once whatsmeow has saved
// the paired device, makes MarkPreKeysAsUploaded fail as a worker killed
// right after the server acknowledged the upload would: nothing of the
// mark reaches Postgres.
type crashBeforeMark struct {
	wastore.DeviceContainer
	acked chan struct{}
}

func (c *crashBeforeMark) PutDevice(ctx context.Context, dev *wastore.Device) error {
	err := c.DeviceContainer.PutDevice(ctx, dev)
	if _, done := dev.PreKeys.(*noMark); !done && dev.PreKeys != nil {
		dev.PreKeys = &noMark{PreKeyStore: dev.PreKeys, acked: c.acked}
	}
	return err
}

type noMark struct {
	wastore.PreKeyStore
	acked chan struct{}
	once  atomic.Bool
}

func (m *noMark) MarkPreKeysAsUploaded(context.Context, uint32) error {
	if m.once.CompareAndSwap(false, true) {
		close(m.acked)
	}
	return errors.New("test: the worker died after the upload was acknowledged")
}

// TestPreKeysSurviveACrashAfterUpload pairs a device through a Host (its
// 812 one-time prekeys written in one INSERT), lets the emulator
// acknowledge the upload, and "kills" the worker before whatsmeow marks
// the keys uploaded. A new Host on a new connection then restores the
// device, and a contact's first message, which the emulator encrypts to
// one of the uploaded one-time prekeys, decrypts.
func TestPreKeysSurviveACrashAfterUpload(t *testing.T) {
	w := newPrekeyWorld(t)
	ctx := context.Background()
	const phone = "+15550000101"

	// The first worker: pair, upload, die before the mark.
	db1 := w.open(t)
	h1 := wa.NewHostWith(db1, w.ep, w.log, wa.HostOptions{})
	dev := h1.NewDevice()
	acked := make(chan struct{})
	dev.Container = &crashBeforeMark{DeviceContainer: dev.Container, acked: acked}
	cli := w.pair(t, h1, dev, phone, acked)
	if !wa.IsBatched(dev.PreKeys.(*noMark).PreKeyStore) {
		t.Fatalf("the paired device's prekey store is %T, not the batched one", dev.PreKeys.(*noMark).PreKeyStore)
	}
	jid := dev.ID.String()
	cli.Disconnect()
	db1.Close()
	info, err := w.emu.Device(jid)
	if err != nil || info.PreKeys != 812 {
		t.Fatalf("the emulator holds %d one-time prekeys of %s (err %v), want the 812 uploaded", info.PreKeys, jid, err)
	}

	// What the dead worker left in Postgres: all 812 keys, none marked.
	db2 := w.open(t)
	var stored, marked int
	if err := db2.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE uploaded)
		FROM whatsmeow_pre_keys WHERE jid = $1`, jid).Scan(&stored, &marked); err != nil {
		t.Fatal(err)
	}
	if stored != 812 || marked != 0 {
		t.Fatalf("after the crash Postgres holds %d prekeys of %s (%d marked uploaded), want 812 (0 marked)", stored, jid, marked)
	}

	// The next worker restores the device from Postgres.
	h2 := wa.NewHostWith(db2, w.ep, w.log, wa.HostOptions{})
	dev2 := loadDevice(t, h2, jid)
	if !wa.IsBatched(dev2.PreKeys) {
		t.Fatalf("a loaded device's prekey store is %T, not the batched one", dev2.PreKeys)
	}
	cli2, err := h2.NewClient(dev2, w.log, wa.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	connected := make(chan struct{}, 1)
	texts := make(chan string, 4)
	cli2.AddEventHandler(func(evt any) {
		switch e := evt.(type) {
		case *events.Connected:
			select {
			case connected <- struct{}{}:
			default:
			}
		case *events.Message:
			texts <- e.Message.GetConversation()
		}
	})
	if err := cli2.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cli2.Disconnect)
	select {
	case <-connected:
	case <-time.After(waitFor):
		t.Fatal("the restored device did not connect")
	}

	// A contact writes first: the emulator's phone builds a prekey message
	// on one of the one-time prekeys the dead worker uploaded.
	peer, err := w.emu.AddPeer("+15550000202", "Peer")
	if err != nil {
		t.Fatal(err)
	}
	before, _ := w.emu.Device(jid)
	if _, err := w.emu.SendText(ctx, peer.Phone, phone, "first words", ""); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-texts:
		if got != "first words" {
			t.Fatalf("the restored device decrypted %q, want %q", got, "first words")
		}
	case <-time.After(waitFor):
		t.Fatalf("the restored device did not decrypt the contact's first message; emulator: %+v", w.emu.Stats().MessageStats)
	}
	after, _ := w.emu.Device(jid)
	if after.PreKeys >= before.PreKeys+50 || w.emu.Stats().MessageStats.DecryptFailures != 0 {
		t.Fatalf("emulator prekeys %d -> %d, stats %+v: want one one-time prekey used and no decrypt failure",
			before.PreKeys, after.PreKeys, w.emu.Stats().MessageStats)
	}
}

// TestUploadedPreKeyCountIsBoundedAndRefills pairs a device (812 one-time
// prekeys uploaded) and reads the count a restored device gives whatsmeow
// as its stored keys run down: one batch (50) at most, then the exact
// number. A device left with fewer than whatsmeow's minimum (5) uploads a
// new batch at its next login, as it did with sqlstore's full count.
func TestUploadedPreKeyCountIsBoundedAndRefills(t *testing.T) {
	w := newPrekeyWorld(t)
	ctx := context.Background()
	const phone = "+15550000111"
	db := w.open(t)
	h := wa.NewHostWith(db, w.ep, w.log, wa.HostOptions{})
	dev := h.NewDevice()
	cli := w.pair(t, h, dev, phone, nil)
	jid := dev.ID.String()
	// whatsmeow marks the keys uploaded once the server has answered.
	deadline := time.Now().Add(waitFor)
	for {
		var marked int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM whatsmeow_pre_keys WHERE jid = $1 AND uploaded`, jid).Scan(&marked); err != nil {
			t.Fatal(err)
		}
		if marked == 812 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the 812 uploaded prekeys of %s are marked uploaded after %s", marked, jid, waitFor)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cli.Disconnect()

	for _, tc := range []struct{ stored, want int }{{812, 50}, {51, 50}, {50, 50}, {49, 49}, {4, 4}} {
		// Keys are used lowest first; the highest stay.
		if _, err := db.ExecContext(ctx, `DELETE FROM whatsmeow_pre_keys WHERE jid = $1 AND key_id <= 812 - $2`, jid, tc.stored); err != nil {
			t.Fatal(err)
		}
		got, err := loadDevice(t, h, jid).PreKeys.UploadedPreKeyCount(ctx)
		if err != nil || got != tc.want {
			t.Fatalf("%d uploaded keys stored: UploadedPreKeyCount = %d, %v; want %d", tc.stored, got, err, tc.want)
		}
	}

	// 4 stored (the server still holds 812): the next login uploads 50.
	cli2, err := h.NewClient(loadDevice(t, h, jid), w.log, wa.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cli2.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cli2.Disconnect)
	for {
		info, err := w.emu.Device(jid)
		if err == nil && info.PreKeys == 812+50 {
			break
		}
		if time.Now().After(deadline.Add(waitFor)) {
			t.Fatalf("the emulator holds %d prekeys of %s (err %v), want 862: no batch was uploaded", info.PreKeys, jid, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkPairPreKeys is one pairing through a Host, from Connect to the
// server's answer to the first prekey upload (812 keys generated, stored
// and uploaded), with whatsmeow's sqlstore writing the keys one INSERT at
// a time, and with batchPreKeys. Postgres commits synchronously, as in
// production.
//
//	go test -run '^$' -bench PairPreKeys -benchtime 20x -count 5 ./internal/wa/
func BenchmarkPairPreKeys(b *testing.B) {
	w := newPrekeyWorld(b)
	db := w.open(b)
	h := wa.NewHostWith(db, w.ep, w.log, wa.HostOptions{})
	for _, variant := range []struct {
		name string
		dev  func() *wastore.Device
	}{
		{"sqlstore", h.SQLStoreDevice},
		{"batched", h.NewDevice},
	} {
		b.Run(variant.name, func(b *testing.B) {
			for i := range b.N {
				dev := variant.dev()
				cli := w.pair(b, h, dev, fmt.Sprintf("+1555%07d", i+1000000*len(variant.name)), nil)
				cli.Disconnect()
			}
		})
	}
}
