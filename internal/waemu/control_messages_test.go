package waemu_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"wasessions/internal/waemu"
)

func TestControlAPIPeersAndMessages(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	srv := httptest.NewServer(emu.Handler())
	defer srv.Close()

	var peer waemu.PeerInfo
	if st := call(t, srv.URL, "POST", "/peers", `{"phone":"+15557654321","name":"Alice"}`, &peer); st != http.StatusCreated ||
		peer.JID != "15557654321@s.whatsapp.net" || peer.Phone != "+15557654321" || peer.Name != "Alice" || peer.LID == "" {
		t.Fatalf("POST /peers = %d %+v", st, peer)
	}
	var again waemu.PeerInfo
	if st := call(t, srv.URL, "POST", "/peers", `{"phone":"15557654321"}`, &again); st != http.StatusOK || again != (waemu.PeerInfo{
		JID: peer.JID, LID: peer.LID, Phone: peer.Phone, Name: "Alice"}) {
		t.Fatalf("POST /peers again = %d %+v, want the same peer", st, again)
	}
	var list struct{ Peers []waemu.PeerInfo }
	if st := call(t, srv.URL, "GET", "/peers", "", &list); st != 200 || len(list.Peers) != 1 {
		t.Fatalf("GET /peers = %d %+v", st, list)
	}
	var inbox struct{ Messages []waemu.InboxMessage }
	if st := call(t, srv.URL, "GET", "/peers/"+peer.JID+"/inbox", "", &inbox); st != 200 || inbox.Messages == nil || len(inbox.Messages) != 0 {
		t.Fatalf("GET inbox = %d %+v, want an empty list", st, inbox)
	}
	if st := call(t, srv.URL, "GET", "/peers/+15557654321/inbox", "", nil); st != 200 {
		t.Fatalf("GET inbox by phone number = %d", st)
	}

	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/peers", `{}`, 400},
		{"POST", "/peers", `{"phone":"12"}`, 400},
		{"POST", "/peers", `{"phone":`, 400},
		{"GET", "/peers/15550000000@s.whatsapp.net/inbox", "", 404},
		{"POST", "/peers/" + peer.JID + "/send", `{"to":"+15557654321"}`, 400},
		{"POST", "/peers/" + peer.JID + "/send", `{"to":"+15550009999","text":"hi"}`, 404},
		{"POST", "/peers/15550000000@s.whatsapp.net/send", `{"to":"+15557654321","text":"hi"}`, 404},
		// The peer's own account has no linked device to receive it.
		{"POST", "/peers/" + peer.JID + "/send", `{"to":"+15557654321","text":"hi"}`, 409},
		{"POST", "/peers/" + peer.JID + "/read", `{"ids":["NOPE"]}`, 404},
		{"POST", "/peers/" + peer.JID + "/read", `{"ids":[]}`, 400},
		{"GET", "/messages/NOPE", "", 404},
		{"POST", "/faults", `{"fault":"set_on_fire"}`, 400},
		{"POST", "/faults", `{"fault":"delay_receipts"}`, 400},
		{"POST", "/faults", `{"fault":"error_ack","code":200}`, 400},
		{"POST", "/faults", `{"fault":"withhold_ack","count":-1}`, 400},
		{"POST", "/faults", `{"fault":"delay_receipts","seconds":1,"phone":"+1555x"}`, 400},
		{"POST", "/faults", `{"fault":"withhold_ack","phone":"+15557654321"}`, 400},
	} {
		if st := call(t, srv.URL, tc.method, tc.path, tc.body, nil); st != tc.want {
			t.Errorf("%s %s %s = %d, want %d", tc.method, tc.path, tc.body, st, tc.want)
		}
	}

	var f waemu.Fault
	if st := call(t, srv.URL, "POST", "/faults", `{"fault":"error_ack","device":"15550001234:1@s.whatsapp.net","count":2,"code":479}`, &f); st != 201 ||
		f.ID == 0 || f.Kind != "error_ack" || f.Remaining != 2 || f.Device != "15550001234:1@s.whatsapp.net" {
		t.Fatalf("POST /faults = %d %+v", st, f)
	}
	var faults struct{ Faults []waemu.Fault }
	if call(t, srv.URL, "GET", "/faults", "", &faults); len(faults.Faults) != 1 || faults.Faults[0] != f {
		t.Fatalf("GET /faults = %+v", faults)
	}
	if call(t, srv.URL, "DELETE", "/faults", "", &faults); len(faults.Faults) != 0 || len(emu.Faults()) != 0 {
		t.Fatalf("DELETE /faults left %+v", emu.Faults())
	}
	var stats map[string]any
	call(t, srv.URL, "GET", "/stats", "", &stats)
	for _, k := range []string{"peers", "messages_in", "messages_out", "duplicate_messages", "decrypt_failures", "redeliveries", "rejected_messages", "retry_receipts"} {
		if _, ok := stats[k]; !ok {
			t.Errorf("GET /stats has no %q: %v", k, stats)
		}
	}
}
