package waemu_test

import (
	"fmt"
	"sync"
	"testing"

	"wasessions/internal/waemu"
	"wasessions/internal/waemu/waemutest"
)

// TestManyClientsConnectedAtOnce links 200 real whatsmeow clients (pairing
// several at a time) and checks they are all connected together. Their
// one-time prekeys are kept in memory (waemutest), everything else in
// Postgres. The
// 1,000-client figure and memory per connection come from the load test
// (cmd/waemu-loadtest), not from here.
func TestManyClientsConnectedAtOnce(t *testing.T) {
	t.Parallel()
	const n, parallel = 200, 8
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	// Prekey generation is the client's cost; keep it out of the way.
	pool := waemutest.NewPreKeyPool()

	clients := make([]*client, n)
	jids := make([]string, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, jid, err := pairQRErr(t, emu, pool.NewDevice(container), "", "")
			if err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
				return
			}
			clients[i], jids[i] = c, jid
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	st := emu.Stats()
	if st.Connections != n || st.Pairings != n || st.Logins != n || st.Conflicts != 0 || st.Devices != n {
		t.Fatalf("stats = %+v, want %d connections, pairings, logins and devices, no conflict", st, n)
	}
	phones := map[string]bool{}
	for _, d := range emu.Devices() {
		if !d.Connected {
			t.Fatalf("device %s is not connected", d.JID)
		}
		if phones[d.Phone] {
			t.Fatalf("generated phone %s used twice", d.Phone)
		}
		phones[d.Phone] = true
	}
	for i, c := range clients {
		if !c.IsLoggedIn() || c.Store.ID.String() != jids[i] {
			t.Fatalf("client %d: logged in %v as %v, want %s", i, c.IsLoggedIn(), c.Store.ID, jids[i])
		}
		c.assertHealthy()
	}
}
