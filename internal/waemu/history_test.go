package waemu_test

import (
	"context"
	"testing"

	"go.mau.fi/whatsmeow/types/events"

	"wasessions/internal/testfactory"
	"wasessions/internal/waemu"
)

// TestHistorySync: the account's phone shares chats with its linked device;
// whatsmeow (downloading history, the default) decodes the inline payload
// into one events.HistorySync holding each chat and its texts with their
// ids and senders, and receipts the notification.
func TestHistorySync(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	c, _ := pairPooled(t, emu, newContainer(t), "+15550001234", "Me")
	if _, err := emu.AddPeer("+15557654321", "Alice"); err != nil {
		t.Fatal(err)
	}
	id, chats, err := emu.SendHistorySync(context.Background(), "+15550001234", []waemu.HistoryChat{{
		With:     "+15557654321",
		Messages: []waemu.HistoryText{{Text: "hi from alice"}, {Text: "hi back", FromMe: true}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	hs := c.wait("history sync", func(e any) bool { _, ok := e.(*events.HistorySync); return ok }).(*events.HistorySync)
	convs := hs.Data.GetConversations()
	if len(convs) != 1 || convs[0].GetID() != "15557654321@s.whatsapp.net" || len(convs[0].GetMessages()) != 2 {
		t.Fatalf("history: %v", hs.Data)
	}
	for i, hm := range convs[0].GetMessages() {
		want := chats[0].Messages[i]
		wm := hm.GetMessage()
		if wm.GetKey().GetID() != want.ID || wm.GetKey().GetFromMe() != want.FromMe || wm.GetMessage().GetConversation() != want.Text {
			t.Fatalf("history message %d: %v, want %+v", i, wm, want)
		}
	}
	testfactory.EventuallyIn(t, "the device's receipt for the notification", waitTimeout, func() bool {
		sm, err := emu.Message(id)
		return err == nil && len(sm.Devices) == 1 && sm.Devices[0].State == "delivered"
	})
	if st := emu.Stats(); st.DecryptFailures != 0 || st.RejectedMessages != 0 {
		t.Fatalf("stats = %+v", st)
	}
	c.assertHealthy()
}
