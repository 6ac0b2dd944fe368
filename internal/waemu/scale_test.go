package waemu_test

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"wasessions/internal/testfactory"
	"wasessions/internal/waemu"
)

// scaleMessages is how many texts TestMessagesAtScale sends each way; make
// test keeps the default, and the figure is
//
//	scripts/test.sh ./internal/waemu -run TestMessagesAtScale -waemu.messages 1000 -v
var scaleMessages = flag.Int("waemu.messages", 200, "texts TestMessagesAtScale sends each way")

// TestMessagesAtScale: the unmodified client with its Postgres sqlstore
// sends N texts to three peers while the peers send it N texts; every one
// decrypts on both sides (no decrypt failure, no retry receipt), arrives
// exactly once, and the client sees delivered and read receipts for all it
// sent. Then the client goes offline, the peers send more, and its next
// login gets every one of those and nothing twice.
func TestMessagesAtScale(t *testing.T) {
	t.Parallel()
	n := *scaleMessages
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	ctx := context.Background()

	const account = "+15550009001"
	c, _ := pairQR(t, emu, container, account, "Scale")
	var peers []waemu.PeerInfo
	for i := range 3 {
		p, err := emu.AddPeer(fmt.Sprintf("+1555765900%d", i), fmt.Sprintf("Peer %d", i))
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, p)
	}

	// Sessions first, one exchange each way per peer.
	for _, p := range peers {
		if _, err := c.SendMessage(ctx, peerJIDOf(p), textMsg("hello "+p.Name)); err != nil {
			t.Fatal(err)
		}
		id, err := emu.SendText(ctx, p.JID, account, "hello from "+p.Name, "")
		if err != nil {
			t.Fatal(err)
		}
		c.wait("the peer's hello", isMessageText("hello from "+p.Name))
		waitDelivered(t, emu, id)
	}
	helloIn := emu.Stats().MessagesIn

	// Client → peers, round robin, timing SendMessage until the server's ack.
	sent := make([][]string, len(peers)) // ids per peer, in order
	latencies := make([]time.Duration, 0, n)
	start := time.Now()
	for i := range n {
		pi := i % len(peers)
		t0 := time.Now()
		resp, err := c.SendMessage(ctx, peerJIDOf(peers[pi]), textMsg(fmt.Sprintf("out %d", i)))
		if err != nil {
			t.Fatalf("SendMessage %d: %v", i, err)
		}
		latencies = append(latencies, time.Since(t0))
		sent[pi] = append(sent[pi], resp.ID)
	}
	outWall := time.Since(start)

	// Then peers → client, one goroutine per peer. (Not at the same time
	// as the sends: whatsmeow keeps a session record in memory for the whole
	// of a send and writes it back at the end, so a message it decrypts
	// meanwhile on the same session rewinds the sending chain and its next
	// message reuses a counter; WhatsApp's clients recover from that with
	// retry receipts.)
	inStart := time.Now()
	var wg sync.WaitGroup
	inTexts := make([][]string, len(peers))
	inErr := make(chan error, len(peers))
	for pi, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := pi; i < n; i += len(peers) {
				text := fmt.Sprintf("in %d from %d", i, pi)
				if _, err := emu.SendText(ctx, p.JID, account, text, ""); err != nil {
					inErr <- err
					return
				}
				inTexts[pi] = append(inTexts[pi], text)
			}
		}()
	}
	wg.Wait()
	close(inErr)
	for err := range inErr {
		t.Fatalf("SendText: %v", err)
	}
	c.waitN("every peer's text", n+len(peers), isMessage)
	inWall := time.Since(inStart)
	slices.Sort(latencies)
	t.Logf("%d texts client→peers in %v (%.0f/s), SendMessage→ack p50 %v p99 %v; %d texts peers→client decrypted by the client in %v (%.0f/s)",
		n, outWall.Round(time.Millisecond), float64(n)/outWall.Seconds(),
		latencies[len(latencies)/2].Round(time.Microsecond), latencies[len(latencies)*99/100].Round(time.Microsecond),
		n, inWall.Round(time.Millisecond), float64(n)/inWall.Seconds())

	// Every text the client sent is in its peer's inbox once, in order.
	for pi, p := range peers {
		inbox, err := emu.Inbox(p.JID)
		if err != nil {
			t.Fatal(err)
		}
		inbox = inbox[1:] // the hello
		if len(inbox) != len(sent[pi]) {
			t.Fatalf("peer %d inbox has %d messages, want %d", pi, len(inbox), len(sent[pi]))
		}
		for i, m := range inbox {
			if m.ID != sent[pi][i] || m.Count != 1 {
				t.Fatalf("peer %d inbox[%d] = %+v, want id %s once", pi, i, m, sent[pi][i])
			}
		}
	}
	// Every text the peers sent reached the client once.
	got := map[string]int{}
	for _, e := range c.snapshot() {
		if m, ok := e.(*events.Message); ok {
			got[m.Message.GetConversation()]++
		}
	}
	for _, texts := range inTexts {
		for _, text := range texts {
			if got[text] != 1 {
				t.Fatalf("%q reached the client %d times", text, got[text])
			}
		}
	}
	// Delivered receipts for all the client sent; then the peers read them.
	var all []string
	for _, ids := range sent {
		all = append(all, ids...)
	}
	testfactory.EventuallyIn(c.t, "delivered receipts for every sent text", 2*waitTimeout, func() bool { return receipted(c, types.ReceiptTypeDelivered, all) })
	for pi, p := range peers {
		if _, err := emu.MarkRead(p.JID, sent[pi]); err != nil {
			t.Fatal(err)
		}
	}
	testfactory.EventuallyIn(c.t, "read receipts for every sent text", 2*waitTimeout, func() bool { return receipted(c, types.ReceiptTypeRead, all) })

	// Offline: the peers send while the client is away.
	testfactory.EventuallyIn(c.t, "the client's receipts for every peer text, and its acks of the peers' receipts", 2*waitTimeout, func() bool {
		return allDelivered(emu) && emu.PendingFor(c.Store.ID.String()) == 0
	})
	c.Disconnect()
	testfactory.EventuallyIn(t, "the client is gone", waitTimeout, func() bool { return emu.Stats().Connections == 0 })
	offline := n / 10
	for i := range offline {
		if _, err := emu.SendText(ctx, peers[i%len(peers)].JID, account, fmt.Sprintf("offline %d", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	dev, err := container.GetDevice(ctx, *c.Store.ID)
	if err != nil {
		t.Fatal(err)
	}
	c2 := newClient(t, emu, dev)
	if err := c2.Connect(); err != nil {
		t.Fatal(err)
	}
	c2.waitN("every offline text", offline, isMessage)
	testfactory.EventuallyIn(c2.t, "receipts for the offline texts", 2*waitTimeout, func() bool { return allDelivered(emu) && emu.PendingFor(c.Store.ID.String()) == 0 })
	time.Sleep(time.Second) // anything delivered twice would show up now
	got = map[string]int{}
	for _, e := range c2.snapshot() {
		if m, ok := e.(*events.Message); ok {
			got[m.Message.GetConversation()]++
		}
	}
	if len(got) != offline {
		t.Fatalf("after the offline period the client got %d distinct texts, want %d", len(got), offline)
	}
	for text, k := range got {
		if k != 1 {
			t.Fatalf("%q arrived %d times", text, k)
		}
	}

	st := emu.Stats()
	hellos := int64(len(peers))
	if st.MessagesIn != helloIn+int64(n) || helloIn != hellos || st.MessagesOut != hellos+int64(n+offline) || st.DecryptFailures != 0 || st.RetryReceipts != 0 ||
		st.DuplicateMessages != 0 || st.RejectedMessages != 0 || st.Redeliveries != 0 {
		t.Fatalf("stats = %+v", st)
	}
	c.assertHealthy()
	c2.assertHealthy()
}

func peerJIDOf(p waemu.PeerInfo) types.JID { return types.NewJID(p.Phone[1:], types.DefaultUserServer) }

func isMessage(e any) bool { _, ok := e.(*events.Message); return ok }

// receipted reports whether the client saw a receipt of this type for every
// id.
func receipted(c *client, typ types.ReceiptType, ids []string) bool {
	seen := map[string]bool{}
	for _, e := range c.snapshot() {
		if r, ok := e.(*events.Receipt); ok && r.Type == typ {
			for _, id := range r.MessageIDs {
				seen[id] = true
			}
		}
	}
	for _, id := range ids {
		if !seen[id] {
			return false
		}
	}
	return true
}

// allDelivered reports whether the client receipted every message the peers
// sent.
func allDelivered(emu *waemu.Server) bool { return emu.PendingMessages() == 0 }
