package waemu_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"

	"wasessions/internal/testfactory"
	"wasessions/internal/waemu"
	"wasessions/internal/waemu/waemutest"
)

// pairPooled is pairQR with the device's one-time prekeys drawn from a pool
// shared by the test process (waemutest), for tests that never reload the
// device from Postgres: generating and inserting 812 prekeys per pairing is
// the client's cost and, with -race on a busy machine, most of a test's time.
func pairPooled(t testing.TB, emu *waemu.Server, container *sqlstore.Container, phone, name string) (*client, string) {
	t.Helper()
	c, jid, err := pairQRErr(t, emu, sharedPool().NewDevice(container), phone, name)
	if err != nil {
		t.Fatal(err)
	}
	return c, jid
}

var sharedPool = sync.OnceValue(waemutest.NewPreKeyPool)

// peerJID is the phone-number JID of a peer created with this number.
func peerJID(phone string) types.JID {
	return types.NewJID(phone[1:], types.DefaultUserServer)
}

// waitDelivered waits until every device receipted message id (a client
// disconnected before its receipt went out gets the message again).
func waitDelivered(t testing.TB, emu *waemu.Server, id string) {
	t.Helper()
	testfactory.EventuallyIn(t, "the client's receipt for "+id, waitTimeout, func() bool {
		m, err := emu.Message(id)
		if err != nil {
			return false
		}
		for _, d := range m.Devices {
			if d.DeliveredAt == nil {
				return false
			}
		}
		return true
	})
}

func textMsg(s string) *waE2E.Message { return &waE2E.Message{Conversation: proto.String(s)} }

func isMessageText(text string) func(any) bool {
	return func(e any) bool {
		m, ok := e.(*events.Message)
		return ok && m.Message.GetConversation() == text
	}
}

func isReceipt(typ types.ReceiptType, id string) func(any) bool {
	return func(e any) bool {
		r, ok := e.(*events.Receipt)
		if !ok || r.Type != typ {
			return false
		}
		for _, x := range r.MessageIDs {
			if x == id {
				return true
			}
		}
		return false
	}
}

func TestMessagesBothWays(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	ctx := context.Background()

	c, jid := pairPooled(t, emu, container, "+15550001234", "Me")
	alice, err := emu.AddPeer("+15557654321", "Alice")
	if err != nil {
		t.Fatal(err)
	}
	if alice.JID != "15557654321@s.whatsapp.net" || !alice.Created {
		t.Fatalf("AddPeer = %+v", alice)
	}

	// Linked client → peer.
	resp, err := c.SendMessage(ctx, peerJID("+15557654321"), textMsg("hello alice"))
	if err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	inbox, err := emu.Inbox(alice.JID)
	if err != nil || len(inbox) != 1 || inbox[0].ID != resp.ID || inbox[0].Text != "hello alice" ||
		inbox[0].Count != 1 || inbox[0].From != "15550001234@s.whatsapp.net" || inbox[0].Device != jid {
		t.Fatalf("inbox = %+v, %v", inbox, err)
	}
	c.wait("delivery receipt", isReceipt(types.ReceiptTypeDelivered, resp.ID))
	if _, err := emu.MarkRead(alice.JID, []string{resp.ID}); err != nil {
		t.Fatal(err)
	}
	c.wait("read receipt", isReceipt(types.ReceiptTypeRead, resp.ID))

	// Peer → linked client, twice (pkmsg, then msg once the session is answered).
	for _, text := range []string{"hi from alice", "second from alice"} {
		id, err := emu.SendText(ctx, alice.JID, "+15550001234", text, "")
		if err != nil {
			t.Fatalf("SendText: %v", err)
		}
		m := c.wait("message from the peer", isMessageText(text)).(*events.Message)
		if m.Info.ID != id || m.Info.Sender.User != "15557654321" || m.Info.IsFromMe {
			t.Fatalf("message info = %+v", m.Info)
		}
		testfactory.EventuallyIn(t, "the client's receipt reaches the emulator", waitTimeout, func() bool {
			sm, err := emu.Message(id)
			return err == nil && len(sm.Devices) == 1 && sm.Devices[0].State == "delivered"
		})
	}
	st := emu.Stats()
	if st.MessagesIn != 1 || st.MessagesOut != 2 || st.DecryptFailures != 0 || st.DuplicateMessages != 0 ||
		st.RetryReceipts != 0 || st.OwnDeviceCopies != 1 || st.RejectedMessages != 0 {
		t.Fatalf("stats = %+v", st)
	}
	c.assertHealthy()
}

func TestPeersAndContacts(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	ctx := context.Background()

	c, jid := pairPooled(t, emu, container, "+15550002001", "Me")
	second, jid2 := pairPooled(t, emu, container, "+15550002001", "Me")
	second.Disconnect()
	first, err := emu.AddPeer("+1 555 765 0001", "Bob")
	if err != nil || !first.Created {
		t.Fatalf("AddPeer = %+v, %v", first, err)
	}
	again, err := emu.AddPeer("+15557650001", "")
	if err != nil || again.Created || again.JID != first.JID || again.LID != first.LID || again.Name != "Bob" {
		t.Fatalf("AddPeer again = %+v, %v; want the same peer", again, err)
	}
	if _, err := emu.AddPeer("12", ""); !errors.Is(err, waemu.ErrBadPhone) {
		t.Fatalf("AddPeer(12) error = %v, want ErrBadPhone", err)
	}

	res, err := c.IsOnWhatsApp(ctx, []string{"+15557650001", "+15559990000"})
	if err != nil {
		t.Fatalf("IsOnWhatsApp: %v", err)
	}
	if len(res) != 2 || !res[0].IsIn || res[0].JID.String() != first.JID || res[0].Query != "+15557650001" ||
		res[1].IsIn || res[1].Query != "+15559990000" {
		t.Fatalf("IsOnWhatsApp = %+v", res)
	}

	devs, err := c.GetUserDevices(ctx, []types.JID{peerJID("+15557650001"), peerJID("+15550002001")})
	if err != nil {
		t.Fatalf("GetUserDevices: %v", err)
	}
	var got []string
	for _, d := range devs {
		got = append(got, d.String())
	}
	// The peer's phone, the account's own phone and its other linked
	// device, never the asking device.
	want := []string{"15557650001@s.whatsapp.net", "15550002001@s.whatsapp.net", jid2}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("devices = %v, want %v (asking device %s)", got, want, jid)
	}
	info, err := c.GetUserInfo(ctx, []types.JID{peerJID("+15557650001")})
	if err != nil || info[peerJID("+15557650001")].LID.String() != first.LID {
		t.Fatalf("GetUserInfo = %+v, %v; want LID %s", info, err, first.LID)
	}
	if peers := emu.Peers(); len(peers) != 1 || peers[0].JID != first.JID {
		t.Fatalf("Peers() = %+v", peers)
	}
	c.assertHealthy()
}

func TestPreKeysStoredConsumedAndRefilled(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	ctx := context.Background()

	c, jid := pairQR(t, emu, container, "+15550003001", "Keys")
	d, _ := emu.Device(jid)
	if d.PreKeys != 812 {
		t.Fatalf("prekeys after the first upload = %d, want 812", d.PreKeys)
	}
	// A peer's first message starts a session from the device's bundle and
	// consumes one one-time prekey.
	alice, _ := emu.AddPeer("+15557653001", "Alice")
	firstID, err := emu.SendText(ctx, alice.JID, "+15550003001", "first", "")
	if err != nil {
		t.Fatal(err)
	}
	c.wait("the peer's message", isMessageText("first"))
	waitDelivered(t, emu, firstID)
	if d, _ := emu.Device(jid); d.PreKeys != 811 {
		t.Fatalf("prekeys after a session was started = %d, want 811", d.PreKeys)
	}
	// Drain to 4: at its next login the client sees a count below 5 and
	// uploads 50 more.
	for range 811 - 4 {
		if err := emu.TakeBundle(jid); err != nil {
			t.Fatal(err)
		}
	}
	if d, _ := emu.Device(jid); d.PreKeys != 4 {
		t.Fatalf("prekeys after draining = %d, want 4", d.PreKeys)
	}
	c.Disconnect()
	testfactory.EventuallyIn(t, "the client is gone", waitTimeout, func() bool { return emu.Stats().Connections == 0 })
	if err := c.Connect(); err != nil {
		t.Fatal(err)
	}
	c.waitN("Connected again", 2, isConnected)
	testfactory.EventuallyIn(t, "the client uploads more prekeys", waitTimeout, func() bool {
		d, _ := emu.Device(jid)
		return d.PreKeys == 54
	})
	// The refilled device still decrypts (its session is intact).
	if _, err := emu.SendText(ctx, alice.JID, "+15550003001", "after refill", ""); err != nil {
		t.Fatal(err)
	}
	c.wait("the message after the refill", isMessageText("after refill"))
	c.assertHealthy()
}

// rawMessage sends a hand-made <message> through the client's own socket
// and returns the server's ack.
func rawMessage(t *testing.T, c *client, node waBinary.Node) *waBinary.Node {
	t.Helper()
	id := node.Attrs["id"].(string)
	in := c.DangerousInternals()
	ch := in.WaitResponse(id)
	if err := in.SendNode(context.Background(), node); err != nil {
		t.Fatalf("send raw message: %v", err)
	}
	select {
	case ack := <-ch:
		return ack
	case <-time.After(waitTimeout):
		t.Fatal("no ack for the raw message")
		return nil
	}
}

func TestMessageRefusalsAndDuplicates(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	ctx := context.Background()

	c, _ := pairPooled(t, emu, container, "+15550004001", "Me")
	alice, _ := emu.AddPeer("+15557654001", "Alice")
	to := peerJID("+15557654001")

	// Empty participants: an error ack, counted, nothing recorded.
	ack := rawMessage(t, c, waBinary.Node{Tag: "message", Attrs: waBinary.Attrs{"id": "EMPTY1", "to": to, "type": "text"},
		Content: []waBinary.Node{{Tag: "participants"}}})
	if ack.Tag != "ack" || ack.AttrGetter().OptionalInt("error") != 400 {
		t.Fatalf("ack for empty participants = %s", ack.XMLString())
	}
	// A ciphertext that does not decrypt: an error ack and a decrypt failure.
	ack = rawMessage(t, c, waBinary.Node{Tag: "message", Attrs: waBinary.Attrs{"id": "GARBAGE1", "to": to, "type": "text"},
		Content: []waBinary.Node{{Tag: "participants", Content: []waBinary.Node{{Tag: "to", Attrs: waBinary.Attrs{"jid": to},
			Content: []waBinary.Node{{Tag: "enc", Attrs: waBinary.Attrs{"v": "2", "type": "msg"}, Content: []byte("not signal")}}}}}}})
	if ack.AttrGetter().OptionalInt("error") != 488 {
		t.Fatalf("ack for an undecryptable message = %s", ack.XMLString())
	}
	// A number nobody has: whatsmeow finds no device of it, only its own
	// phone's copy goes out, and the emulator refuses the message.
	_, err := c.SendMessage(ctx, peerJID("+15559994001"), textMsg("to nobody"))
	if !errors.Is(err, whatsmeow.ErrServerReturnedError) {
		t.Fatalf("SendMessage to an unknown number: %v, want ErrServerReturnedError", err)
	}
	if inbox, _ := emu.Inbox(alice.JID); len(inbox) != 0 {
		t.Fatalf("inbox after refusals = %+v", inbox)
	}
	// The same id sent twice (freshly encrypted each time) is one message
	// arriving twice.
	extra := whatsmeow.SendRequestExtra{ID: "3EB0DUPLICATE0001"}
	for range 2 {
		if _, err := c.SendMessage(ctx, to, textMsg("twice"), extra); err != nil {
			t.Fatalf("SendMessage: %v", err)
		}
	}
	inbox, _ := emu.Inbox(alice.JID)
	if len(inbox) != 1 || inbox[0].ID != extra.ID || inbox[0].Count != 2 || inbox[0].Text != "twice" {
		t.Fatalf("inbox = %+v, want one message with count 2", inbox)
	}
	st := emu.Stats()
	if st.MessagesIn != 1 || st.DuplicateMessages != 1 || st.RejectedMessages != 3 || st.DecryptFailures != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestOfflineDeliveryAndCrashBeforeReceipt(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	ctx := context.Background()

	c, jid := pairQR(t, emu, container, "+15550005001", "Me")
	alice, _ := emu.AddPeer("+15557655001", "Alice")
	c.Disconnect()
	testfactory.EventuallyIn(t, "the client is gone", waitTimeout, func() bool { return emu.Stats().Connections == 0 })

	// Offline: three messages wait; the next login gets each once.
	var ids []string
	for i := range 3 {
		id, err := emu.SendText(ctx, alice.JID, "+15550005001", fmt.Sprintf("offline %d", i), "")
		if err != nil {
			t.Fatal(err)
		}
		if m, _ := emu.Message(id); m.Devices[0].State != "pending" || m.Devices[0].Sends != 0 {
			t.Fatalf("message to an offline device = %+v", m)
		}
		ids = append(ids, id)
	}
	dev, err := container.GetDevice(ctx, *c.Store.ID)
	if err != nil {
		t.Fatal(err)
	}
	c2 := newClient(t, emu, dev)
	if err := c2.Connect(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		c2.wait("an offline message", isMessageText(fmt.Sprintf("offline %d", i)))
	}
	for _, id := range ids {
		waitDelivered(t, emu, id)
		if m, _ := emu.Message(id); m.Devices[0].State != "delivered" || m.Devices[0].Sends != 1 {
			t.Fatalf("offline message = %+v, want delivered after one send", m)
		}
	}
	c2.Disconnect()
	testfactory.EventuallyIn(t, "the client is gone", waitTimeout, func() bool { return emu.Stats().Connections == 0 })

	// A client whose handler fails (as one that crashed before committing
	// would) sends no receipt; the message comes again on its next login,
	// served from whatsmeow's decrypted-event buffer.
	crashy := newClient(t, emu, dev)
	crashy.SynchronousAck = true
	crashy.EnableDecryptedEventBuffer = true
	crashy.AddEventHandlerWithSuccessStatus(func(evt any) bool {
		_, isMsg := evt.(*events.Message)
		return !isMsg
	})
	if err := crashy.Connect(); err != nil {
		t.Fatal(err)
	}
	crashy.wait("Connected", isConnected)
	id, err := emu.SendText(ctx, alice.JID, "+15550005001", "needs a receipt", "")
	if err != nil {
		t.Fatal(err)
	}
	crashy.wait("the message before the crash", isMessageText("needs a receipt"))
	if m, _ := emu.Message(id); m.Devices[0].State != "sent" {
		t.Fatalf("message without a receipt = %+v, want sent", m)
	}
	crashy.Disconnect()
	testfactory.EventuallyIn(t, "the client is gone", waitTimeout, func() bool { return emu.Stats().Connections == 0 })

	healthy := newClient(t, emu, dev)
	healthy.SynchronousAck = true
	healthy.EnableDecryptedEventBuffer = true
	if err := healthy.Connect(); err != nil {
		t.Fatal(err)
	}
	healthy.wait("the message again after the crash", isMessageText("needs a receipt"))
	testfactory.EventuallyIn(t, "the receipt after redelivery", waitTimeout, func() bool {
		m, _ := emu.Message(id)
		return m.Devices[0].State == "delivered" && m.Devices[0].Sends == 2 && m.Devices[0].Redeliveries == 1
	})
	time.Sleep(500 * time.Millisecond) // nothing else may arrive
	if n := healthy.count(isMessageText("needs a receipt")); n != 1 {
		t.Fatalf("the redelivered message arrived %d times", n)
	}
	if n := healthy.count(func(e any) bool { _, ok := e.(*events.Message); return ok }); n != 1 {
		t.Fatalf("after the crash the client got %d messages, want only the unreceipted one", n)
	}
	st := emu.Stats()
	if st.Redeliveries != 1 || st.RetryReceipts != 0 || st.MessagesOut != 4 {
		t.Fatalf("stats = %+v", st)
	}
	healthy.assertHealthy()
	_ = jid
}

// TestOwnDeviceCopies: whatsmeow encrypts a DeviceSentMessage copy for each
// of the account's other devices. The account's phone (device 0, emulated)
// decrypts its copy and checks it names the chat; another linked device
// gets its copy relayed and shows the message as sent by itself.
func TestOwnDeviceCopies(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	ctx := context.Background()

	c, _ := pairPooled(t, emu, container, "+15550007001", "Me")
	sibling, _ := pairPooled(t, emu, container, "+15550007001", "Me")
	alice, _ := emu.AddPeer("+15557657001", "Alice")

	resp, err := c.SendMessage(ctx, peerJID("+15557657001"), textMsg("seen on my other device"))
	if err != nil {
		t.Fatal(err)
	}
	m := sibling.wait("the copy on the other device", isMessageText("seen on my other device")).(*events.Message)
	if !m.Info.IsFromMe || m.Info.ID != resp.ID || m.Info.Chat.User != "15557657001" {
		t.Fatalf("copy on the sibling device: %+v", m.Info)
	}
	if inbox, _ := emu.Inbox(alice.JID); len(inbox) != 1 || inbox[0].Count != 1 {
		t.Fatalf("peer inbox = %+v", inbox)
	}
	// The account's phone got its copy and says so to the sending device:
	// a receipt of type "sender" that names the chat.
	r := c.wait("the own phone's receipt", isReceipt(types.ReceiptTypeSender, resp.ID)).(*events.Receipt)
	if !r.IsFromMe || r.Chat.User != "15557657001" || r.Sender.User != "15550007001" {
		t.Fatalf("own phone's receipt: %+v", r.MessageSource)
	}
	st := emu.Stats()
	if st.OwnDeviceCopies != 1 || st.MessagesIn != 1 || st.DecryptFailures != 0 {
		t.Fatalf("stats = %+v", st)
	}
	// A note to self: the account's phone is the recipient, and its copy is
	// the DeviceSentMessage.
	self, err := c.SendMessage(ctx, peerJID("+15550007001"), textMsg("note to self"))
	if err != nil {
		t.Fatal(err)
	}
	if inbox, _ := emu.Inbox("+15550007001"); len(inbox) != 1 || inbox[0].ID != self.ID || inbox[0].Text != "note to self" {
		t.Fatalf("own phone's inbox = %+v", inbox)
	}
	sibling.wait("the note to self on the other device", isMessageText("note to self"))
	testfactory.EventuallyIn(t, "the sibling's receipt for its copy clears it", waitTimeout, func() bool {
		return emu.PendingFor(sibling.Store.ID.String()) == 0
	})
	testfactory.EventuallyIn(t, "the sender's ack of the peer's receipt clears it", waitTimeout, func() bool {
		return emu.PendingFor(c.Store.ID.String()) == 0
	})
	if st := emu.Stats(); st.OwnDeviceCopies != 1 || st.MessagesIn != 2 || st.DecryptFailures != 0 || st.RejectedMessages != 0 {
		t.Fatalf("stats = %+v", st)
	}
	c.assertHealthy()
	sibling.assertHealthy()
}

// TestRetryReceiptResends: a client that cannot decrypt a peer's message
// (here: it lost its session) sends a retry receipt; the peer's phone starts
// a new session from the device's keys and sends the message again with the
// same id, and the client gets it once.
func TestRetryReceiptResends(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	ctx := context.Background()

	c, _ := pairQR(t, emu, container, "+15550010001", "Me")
	alice, _ := emu.AddPeer("+15557650101", "Alice")
	first, err := emu.SendText(ctx, alice.JID, "+15550010001", "on the first session", "")
	if err != nil {
		t.Fatal(err)
	}
	c.wait("the first message", isMessageText("on the first session"))
	waitDelivered(t, emu, first)

	lid, _ := types.ParseJID(alice.LID)
	for _, addr := range []string{peerJID("+15557650101").SignalAddress().String(), lid.SignalAddress().String()} {
		if err := c.Store.Sessions.DeleteSession(ctx, addr); err != nil {
			t.Fatal(err)
		}
	}
	id, err := emu.SendText(ctx, alice.JID, "+15550010001", "after the client lost its session", "")
	if err != nil {
		t.Fatal(err)
	}
	m := c.wait("the message, sent again", isMessageText("after the client lost its session")).(*events.Message)
	if m.Info.ID != id {
		t.Fatalf("message id %s, want %s", m.Info.ID, id)
	}
	waitDelivered(t, emu, id)
	if st := emu.Stats(); st.RetryReceipts != 1 || st.RejectedMessages != 0 {
		t.Fatalf("stats = %+v, want 1 retry receipt", st)
	}
	if n := c.count(isMessageText("after the client lost its session")); n != 1 {
		t.Fatalf("the message arrived %d times", n)
	}
}
