package waemu_test

import (
	"context"
	"testing"
	"time"

	"wasessions/internal/testfactory"
	"wasessions/internal/waemu"
	"wasessions/internal/waemu/waemutest"
)

// BenchmarkPair times a QR pairing with the real whatsmeow client, from
// Connect of a new device to Connected after the 515 restart and first login
// (prekey upload included). "sqlstore" keeps everything in Postgres, as
// production does (the client then generates and inserts 812 prekeys);
// "memprekeys" keeps the one-time prekeys in memory, which isolates the
// protocol round trips. Scan is reported separately: the phone's side, from
// the scan to the client's signed answer.
func BenchmarkPair(b *testing.B) {
	for _, mode := range []string{"sqlstore", "memprekeys"} {
		b.Run(mode, func(b *testing.B) {
			emu := startEmu(b, waemu.Options{})
			container := newContainer(b)
			pool := waemutest.NewPreKeyPool()
			var scan time.Duration
			b.ResetTimer()
			for b.Loop() {
				dev := container.NewDevice()
				if mode == "memprekeys" {
					dev = pool.NewDevice(container)
				}
				c := newClient(b, emu, dev)
				qr, code := firstQR(b, c)
				start := time.Now()
				if _, err := emu.Scan(context.Background(), code, "", ""); err != nil {
					b.Fatal(err)
				}
				scan += time.Since(start)
				nextQR(b, c, qr)
				c.wait("Connected", isConnected)
				b.StopTimer()
				c.Disconnect()
				b.StartTimer()
			}
			b.ReportMetric(float64(scan.Microseconds())/float64(b.N)/1000, "scan-ms/op")
		})
	}
}

// BenchmarkLogin times the login of a known device from its Postgres store,
// from Connect to Connected (success, prekey count, passive).
func BenchmarkLogin(b *testing.B) {
	emu := startEmu(b, waemu.Options{})
	container := newContainer(b)
	first, _ := pairQR(b, emu, container, "", "")
	first.Disconnect()
	testfactory.EventuallyIn(b, "the socket is closed", waitTimeout, func() bool { return emu.Stats().Connections == 0 })
	b.ResetTimer()
	for b.Loop() {
		dev, err := container.GetDevice(context.Background(), *first.Store.ID)
		if err != nil || dev == nil {
			b.Fatalf("stored device: %v, %v", dev, err)
		}
		c := newClient(b, emu, dev)
		if err := c.Connect(); err != nil {
			b.Fatal(err)
		}
		c.wait("Connected", isConnected)
		b.StopTimer()
		c.Disconnect()
		testfactory.EventuallyIn(b, "the socket is closed", waitTimeout, func() bool { return emu.Stats().Connections == 0 })
		b.StartTimer()
	}
}
