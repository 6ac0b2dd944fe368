package waemu_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"wasessions/internal/waemu"
)

// TestFaultSwitches shows what the unmodified client does under each fault.
func TestFaultSwitches(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	container := newContainer(t)
	ctx := context.Background()

	c, jid := pairPooled(t, emu, container, "+15550006001", "Faulty")
	other, otherJID := pairPooled(t, emu, container, "+15550006002", "Bystander")
	alice, _ := emu.AddPeer("+15557656001", "Alice")
	to := peerJID("+15557656001")
	inboxCount := func(id string) int {
		inbox, _ := emu.Inbox(alice.JID)
		for _, m := range inbox {
			if m.ID == id {
				return m.Count
			}
		}
		return 0
	}

	t.Run("error_ack", func(t *testing.T) {
		// Scoped to one device: the other account's device is not affected.
		if _, err := emu.SetFault(waemu.Fault{Kind: waemu.FaultErrorAck, Device: jid, Remaining: 1, Code: 479}); err != nil {
			t.Fatal(err)
		}
		okResp, err := other.SendMessage(ctx, to, textMsg("bystander"))
		if err != nil {
			t.Fatalf("the other device's send: %v", err)
		}
		resp, err := c.SendMessage(ctx, to, textMsg("refused"))
		if !errors.Is(err, whatsmeow.ErrServerReturnedError) {
			t.Fatalf("SendMessage under error_ack: %v, want ErrServerReturnedError", err)
		}
		if inboxCount(resp.ID) != 0 || inboxCount(okResp.ID) != 1 {
			t.Fatal("the refused message reached the peer, or the other device's did not")
		}
		// The switch was for one message: the next goes through.
		if _, err := c.SendMessage(ctx, to, textMsg("after error_ack")); err != nil {
			t.Fatalf("SendMessage after the fault: %v", err)
		}
		_ = otherJID
	})

	t.Run("withhold_ack", func(t *testing.T) {
		if _, err := emu.SetFault(waemu.Fault{Kind: waemu.FaultWithholdAck, Device: jid, Remaining: 1}); err != nil {
			t.Fatal(err)
		}
		id := c.GenerateMessageID()
		_, err := c.SendMessage(ctx, to, textMsg("unacked"), whatsmeow.SendRequestExtra{ID: id, Timeout: 2 * time.Second})
		if !errors.Is(err, whatsmeow.ErrMessageTimedOut) {
			t.Fatalf("SendMessage under withhold_ack: %v, want ErrMessageTimedOut", err)
		}
		// The peer got it all the same, and says so with a receipt: a sender
		// that retries after the timeout must reuse the id.
		if inboxCount(id) != 1 {
			t.Fatalf("inbox count of the unacked message = %d, want 1", inboxCount(id))
		}
		c.wait("the receipt of the unacked message", isReceipt(types.ReceiptTypeDelivered, id))
		if _, err := c.SendMessage(ctx, to, textMsg("same id again"), whatsmeow.SendRequestExtra{ID: id}); err != nil {
			t.Fatalf("retry with the same id: %v", err)
		}
		if inboxCount(id) != 2 {
			t.Fatalf("inbox count after the retry = %d, want 2 (a duplicate)", inboxCount(id))
		}
	})

	t.Run("drop_before_ack", func(t *testing.T) {
		if _, err := emu.SetFault(waemu.Fault{Kind: waemu.FaultDropBeforeAck, Device: jid, Remaining: 1}); err != nil {
			t.Fatal(err)
		}
		dups := emu.Stats().DuplicateMessages
		connected := c.count(isConnected)
		// whatsmeow waits for its reconnect and sends the same frame again;
		// the send succeeds and the peer has the message twice.
		resp, err := c.SendMessage(ctx, to, textMsg("dropped"))
		if err != nil {
			t.Fatalf("SendMessage under drop_before_ack: %v", err)
		}
		c.waitN("Connected after the drop", connected+1, isConnected)
		if inboxCount(resp.ID) != 2 || emu.Stats().DuplicateMessages != dups+1 {
			t.Fatalf("inbox count %d, duplicates %d; want 2 and %d", inboxCount(resp.ID), emu.Stats().DuplicateMessages, dups+1)
		}
	})

	t.Run("delay_receipts", func(t *testing.T) {
		const delay = 2 * time.Second
		if _, err := emu.SetFault(waemu.Fault{Kind: waemu.FaultDelayReceipts, Seconds: delay.Seconds()}); err != nil {
			t.Fatal(err)
		}
		defer emu.ClearFaults()
		start := time.Now()
		resp, err := c.SendMessage(ctx, to, textMsg("slow receipt"))
		if err != nil {
			t.Fatal(err)
		}
		r := c.wait("the delayed receipt", isReceipt(types.ReceiptTypeDelivered, resp.ID)).(*events.Receipt)
		if got := time.Since(start); got < delay {
			t.Fatalf("receipt %v after the send, before the %v delay", got, delay)
		}
		_ = r
	})

	t.Run("delay_receipts_of_one_phone", func(t *testing.T) {
		// The peer's phone is offline; the sender's own phone is not: its
		// "sender" receipt (WhatsApp holds the message) comes at once.
		const delay = 2 * time.Second
		if _, err := emu.SetFault(waemu.Fault{Kind: waemu.FaultDelayReceipts, Seconds: delay.Seconds(), Phone: "+15557656001"}); err != nil {
			t.Fatal(err)
		}
		defer emu.ClearFaults()
		start := time.Now()
		resp, err := c.SendMessage(ctx, to, textMsg("peer offline"))
		if err != nil {
			t.Fatal(err)
		}
		c.wait("the own phone's receipt", isReceipt(types.ReceiptTypeSender, resp.ID))
		if got := time.Since(start); got >= delay {
			t.Fatalf("own phone's receipt %v after the send, held with the peer's", got)
		}
		c.wait("the peer's delayed receipt", isReceipt(types.ReceiptTypeDelivered, resp.ID))
		if got := time.Since(start); got < delay {
			t.Fatalf("peer's receipt %v after the send, before the %v delay", got, delay)
		}
	})

	st := emu.Stats()
	if st.DecryptFailures != 0 || st.RejectedMessages != 1 {
		t.Fatalf("stats = %+v, want 0 decrypt failures and 1 rejected", st)
	}
}
