package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"wasessions/e2e/harness"
)

// Scenario 1, link: the QR image the API returns decodes to the string the
// emulator's phone accepts; after the scan the session is connected and
// authenticated with the phone's number and push name, and the QR is gone.
func TestLink(t *testing.T) {
	s := newStack(t, stackOpts{})
	user := newUser()

	sess, code, err := s.client.create(user)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("create: %d %v", code, err)
	}
	if sess.Status != "qr" || sess.QRCode == nil {
		t.Fatalf("create answered status %q, qrCode set %v (QR_WAIT should have brought the first QR)", sess.Status, sess.QRCode != nil)
	}
	decoded, err := harness.DecodeQRDataURL(*sess.QRCode)
	if err != nil {
		t.Fatal(err)
	}
	if decoded != str(sess.QRRaw) {
		t.Fatalf("the QR image decodes to %q, but qrRaw is %q", decoded, str(sess.QRRaw))
	}
	// The same QR through GET /qr.
	q, r, err := s.client.qr(user)
	if err != nil || r.Status != http.StatusOK || q.SessionID != sess.SessionID {
		t.Fatalf("GET /qr: %v %s", err, r)
	}
	// A second create while one is live returns it (idempotent).
	again, code, err := s.client.create(user)
	if err != nil || code != http.StatusOK || again.SessionID != sess.SessionID {
		t.Fatalf("second create: %d %v %+v", code, err, again)
	}

	const phone, name = "+15550001111", "Ana Lima"
	jid, err := s.phone.Scan(decoded, phone, name)
	if err != nil {
		t.Fatalf("the emulator refused the decoded QR: %v", err)
	}
	var st session
	s.WaitFor("connected", harness.WaitLong, func() (bool, string) {
		st, err = s.client.status(user)
		return err == nil && st.Status == "connected", fmt.Sprintf("%+v %v", st, err)
	})
	if !st.IsConnected || !st.IsAuthenticated || str(st.PhoneNumber) != phone || str(st.UserName) != name || st.reason() != "paired" {
		t.Fatalf("connected session: connected=%v authenticated=%v phone=%q name=%q reason=%q",
			st.IsConnected, st.IsAuthenticated, str(st.PhoneNumber), str(st.UserName), st.reason())
	}
	if st.QRCode != nil {
		t.Fatal("qrCode is still set")
	}
	if _, r, _ := s.client.qr(user); r.Status != http.StatusConflict || r.code() != "already_linked" {
		t.Fatalf("GET /qr after linking: %s, want 409 already_linked", r)
	}
	// What WhatsApp sees: the device the phone linked, connected.
	dev, found, err := s.phone.Device(jid)
	if err != nil || !found || !dev.Connected || dev.Phone != phone || dev.Name != name {
		t.Fatalf("emulator device %s: %+v found=%v err=%v", jid, dev, found, err)
	}
	// The keys are in Postgres; the session is this user's only active one.
	if row := s.Row(sess.SessionID); str(row.DeviceJID) != jid || !s.KeysExist(jid) {
		t.Fatalf("row device %q, keys in Postgres %v; want %s", str(row.DeviceJID), s.KeysExist(jid), jid)
	}
	var us stats
	if _, err := s.client.data("GET", pathStats, user, false, http.StatusOK, &us); err != nil || us.Total != 1 || us.Active != 1 {
		t.Fatalf("stats: %+v %v", us, err)
	}
	if st := s.EmuStats(); st.Pairings != 1 {
		t.Fatalf("emulator pairings = %d, want 1", st.Pairings)
	}
}

// Scenario 2, unscanned QR: nobody scans. The emulator hands out one
// pair-device ref instead of WhatsApp's six (-qr-refs 1), so whatsmeow's
// QR codes run out after 20 s instead of 160 s; its QR channel then reports
// the timeout and the session ends expired, reason qr_timeout. A new create
// then starts a fresh session that links normally.
func TestUnscannedQRExpires(t *testing.T) {
	s := newStack(t, stackOpts{EmuArgs: []string{"-qr-refs", "1"}})
	user := newUser()
	first, code, err := s.client.create(user)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("create: %d %v", code, err)
	}
	if _, _, err := s.qrOf(user, first); err != nil {
		t.Fatal(err)
	}
	var st session
	s.WaitFor("the session to expire", harness.WaitLong, func() (bool, string) {
		st, err = s.client.status(user)
		return err == nil && st.Status == "expired", fmt.Sprintf("status=%s reason=%s err=%v", st.Status, st.reason(), err)
	})
	if st.SessionID != first.SessionID || st.reason() != "qr_timeout" || st.QRCode != nil || st.IsConnected {
		t.Fatalf("expired session: %+v (reason %q), want reason qr_timeout", st, st.reason())
	}
	if _, r, _ := s.client.qr(user); r.Status != http.StatusGone || r.code() != "session_ended" {
		t.Fatalf("GET /qr of the expired session: %s, want 410 session_ended", r)
	}
	row := s.Row(first.SessionID)
	if row.WorkerID != nil || row.LeaseLive {
		t.Fatalf("expired session still leased by %q", str(row.WorkerID))
	}
	s.WaitFor("the worker to drop the client", 10*time.Second, func() (bool, string) {
		h, err := s.Hosted("w1")
		return err == nil && h == 0, fmt.Sprintf("hosted %d %v", h, err)
	})

	// A new create works: a new session, a new QR, and it links.
	l := s.link(user, "+15550002222", "Bea")
	if l.sessionID == first.SessionID {
		t.Fatal("the new create returned the expired session")
	}
	if st := s.EmuStats(); st.Pairings != 1 {
		t.Fatalf("emulator pairings = %d, want 1", st.Pairings)
	}
}

// Scenario 7, the phone unlinks the device: the session ends logged_out
// with its keys gone from Postgres, and a new create shows a fresh QR.
func TestPhoneUnlinks(t *testing.T) {
	s := newStack(t, stackOpts{})
	user := newUser()
	l := s.link(user, "+15550003333", "Caio")

	if err := s.phone.Unlink(l.jid); err != nil {
		t.Fatal(err)
	}
	var st session
	var err error
	s.WaitFor("logged_out", harness.WaitLong, func() (bool, string) {
		st, err = s.client.status(user)
		return err == nil && st.Status == "logged_out", fmt.Sprintf("status=%s reason=%s err=%v", st.Status, st.reason(), err)
	})
	if st.reason() != "phone_unlinked" || st.IsConnected || st.IsAuthenticated {
		t.Fatalf("logged out session: reason=%q connected=%v authenticated=%v", st.reason(), st.IsConnected, st.IsAuthenticated)
	}
	s.WaitFor("the device keys to be deleted", 10*time.Second, func() (bool, string) {
		return !s.KeysExist(l.jid), "keys still in whatsmeow_device"
	})
	if row := s.Row(l.sessionID); row.DeviceJID != nil || row.WorkerID != nil {
		t.Fatalf("row keeps device %q, worker %q", str(row.DeviceJID), str(row.WorkerID))
	}

	fresh, code, err := s.client.create(user)
	if err != nil || code != http.StatusCreated || fresh.SessionID == l.sessionID {
		t.Fatalf("create after the unlink: %d %v %+v", code, err, fresh)
	}
	dataURL, _, err := s.qrOf(user, fresh)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := harness.DecodeQRDataURL(dataURL); err != nil {
		t.Fatalf("the fresh QR: %v", err)
	}
}

// Scenario 8, the user disconnects: the device is logged out of WhatsApp
// (the emulator no longer lists it), the session is disconnected and not
// authenticated, and its keys are gone.
func TestUserDisconnects(t *testing.T) {
	s := newStack(t, stackOpts{Workers: []string{"w1", "w2"}})
	user := newUser()
	l := s.link(user, "+15550004444", "Davi")

	var st session
	if _, err := s.client.data("POST", pathDisconnect, user, false, http.StatusAccepted, &st); err != nil {
		t.Fatal(err)
	}
	var err error
	s.WaitFor("disconnected", harness.WaitLong, func() (bool, string) {
		st, err = s.client.status(user)
		return err == nil && st.Status == "disconnected", fmt.Sprintf("status=%s reason=%s err=%v", st.Status, st.reason(), err)
	})
	if st.IsConnected || st.IsAuthenticated || st.reason() != "user_disconnected" || st.DesiredState != "gone" {
		t.Fatalf("disconnected session: %+v reason=%q", st, st.reason())
	}
	if _, found, err := s.phone.Device(l.jid); err != nil || found {
		t.Fatalf("the emulator still lists device %s (found=%v err=%v): the logout did not reach WhatsApp", l.jid, found, err)
	}
	if s.KeysExist(l.jid) {
		t.Fatal("device keys still in Postgres")
	}
	// Disconnecting again is a no-op that says so.
	if _, err := s.client.data("POST", pathDisconnect, user, false, http.StatusOK, nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range s.WorkerIDs {
		if h, err := s.Hosted(id); err != nil || h != 0 {
			t.Fatalf("worker %s hosts %d clients (err %v) after the disconnect", id, h, err)
		}
	}
}

// Scenario 9, dropped socket: the emulator closes the device's connection
// as a network failure would; whatsmeow reconnects by itself and the
// session is connected again, on the same worker, with no new pairing.
func TestDroppedSocketReconnects(t *testing.T) {
	s := newStack(t, stackOpts{})
	user := newUser()
	l := s.link(user, "+15550005555", "Edu")
	before := s.EmuStats()

	dropped, err := s.phone.Drop(l.jid)
	if err != nil || !dropped {
		t.Fatalf("drop: dropped=%v err=%v", dropped, err)
	}
	var st session
	s.WaitFor("connected again after the drop", harness.WaitLong, func() (bool, string) {
		st, err = s.client.status(user)
		return err == nil && st.Status == "connected" && st.reason() == "reconnected",
			fmt.Sprintf("status=%s reason=%s err=%v", st.Status, st.reason(), err)
	})
	after := s.EmuStats()
	if after.Pairings != before.Pairings || after.Logins != before.Logins+1 {
		t.Fatalf("emulator before %+v, after %+v: want no new pairing and exactly one new login", before, after)
	}
	if row := s.Row(l.sessionID); str(row.WorkerID) != "w1" || !row.LeaseLive {
		t.Fatalf("after the reconnect: worker %q lease live %v", str(row.WorkerID), row.LeaseLive)
	}
	s.checkHostedOnce(1)
}
