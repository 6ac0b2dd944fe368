package waemu_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"wasessions/internal/waemu"
)

// call sends a control request and decodes the JSON answer into out (if
// not nil), returning the status.
func call(t *testing.T, base, method, path, body string, out any) int {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q", method, path, ct)
	}
	if resp.StatusCode >= 400 {
		var e struct{ Error string }
		if err := json.Unmarshal(data, &e); err != nil || e.Error == "" {
			t.Fatalf("%s %s: status %d without a JSON error: %s", method, path, resp.StatusCode, data)
		}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
	return resp.StatusCode
}

func TestControlAPIErrors(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	srv := httptest.NewServer(emu.Handler())
	defer srv.Close()

	var pk struct{ Pubkey string }
	if st := call(t, srv.URL, "GET", "/pubkey", "", &pk); st != 200 {
		t.Fatalf("GET /pubkey: %d", st)
	}
	want := emu.PubKey()
	if pk.Pubkey != hex.EncodeToString(want[:]) || len(pk.Pubkey) != 64 {
		t.Fatalf("pubkey %q, want %x", pk.Pubkey, want)
	}

	unknown := "/devices/" + url.PathEscape("15550000000:1@s.whatsapp.net")
	tests := []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/devices/15550000000:1@s.whatsapp.net", "", 404},
		{"POST", unknown + "/unlink", "", 404},
		{"POST", unknown + "/drop", "", 404},
		{"POST", "/phone/scan", "{", 400},
		{"POST", "/phone/scan", `{}`, 400},
		{"POST", "/phone/scan", `{"qr": "not a qr"}`, 400},
		{"POST", "/phone/scan", `{"qr": "2@x,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`, 404},
		{"POST", "/phone/code", `{"code": "bad"}`, 400},
		{"POST", "/phone/code", `{"code": "ABCD-EFGH"}`, 404},
		{"POST", "/refuse-logins", `{}`, 400},
		{"POST", "/refuse-logins", `{"seconds": -1}`, 400},
		{"POST", "/refuse-logins", `{"seconds": 0}`, 200},
		{"GET", "/nope", "", 404},
		{"DELETE", "/devices", "", 404},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path+" "+tt.body, func(t *testing.T) {
			if st := call(t, srv.URL, tt.method, tt.path, tt.body, nil); st != tt.want {
				t.Fatalf("status %d, want %d", st, tt.want)
			}
		})
	}

	var raw json.RawMessage
	if st := call(t, srv.URL, "GET", "/devices", "", &raw); st != 200 || !bytes.Equal(bytes.TrimSpace(raw), []byte("[]")) {
		t.Fatalf("GET /devices on an empty emulator: %d %s, want []", st, raw)
	}
}

// TestControlAPIFlow drives a whole device life over the control address,
// as other programs do.
func TestControlAPIFlow(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{ControlAddr: "127.0.0.1:0"})
	base := "http://" + emu.ControlAddr()
	container := newContainer(t)

	c := newClient(t, emu, container.NewDevice())
	_, code := firstQR(t, c)
	body, _ := json.Marshal(map[string]string{"qr": code, "phone": "+44 7700 900123", "name": "Cleo"})
	var paired struct{ JID string }
	if st := call(t, base, "POST", "/phone/scan", string(body), &paired); st != 200 {
		t.Fatalf("POST /phone/scan: %d", st)
	}
	if paired.JID != "447700900123:1@s.whatsapp.net" {
		t.Fatalf("jid %q", paired.JID)
	}
	c.wait("Connected", isConnected)
	if st := call(t, base, "POST", "/phone/scan", string(body), nil); st != 409 {
		t.Fatalf("replayed scan: %d, want 409", st)
	}

	var devs []waemu.DeviceInfo
	if st := call(t, base, "GET", "/devices", "", &devs); st != 200 || len(devs) != 1 {
		t.Fatalf("GET /devices: %d %+v", st, devs)
	}
	if d := devs[0]; d.JID != paired.JID || d.Phone != "+447700900123" || d.Name != "Cleo" || !d.Connected {
		t.Fatalf("device %+v", d)
	}
	var stats waemu.Stats
	if st := call(t, base, "GET", "/stats", "", &stats); st != 200 || stats.Connections != 1 || stats.Pairings != 1 || stats.Logins != 1 || stats.Conflicts != 0 {
		t.Fatalf("GET /stats: %d %+v", st, stats)
	}
	// The raw JSON has the field names other tools rely on.
	var rawStats map[string]any
	call(t, base, "GET", "/stats", "", &rawStats)
	for _, k := range []string{"connections", "pairings", "logins", "conflicts"} {
		if _, ok := rawStats[k]; !ok {
			t.Fatalf("/stats lacks %q: %v", k, rawStats)
		}
	}

	path := "/devices/" + paired.JID
	var dropped struct{ Dropped bool }
	if st := call(t, base, "POST", path+"/drop", "", &dropped); st != 200 || !dropped.Dropped {
		t.Fatalf("drop: %d %+v", st, dropped)
	}
	c.waitN("Connected after the drop", 2, isConnected)
	if st := call(t, base, "POST", path+"/unlink", "", nil); st != 200 {
		t.Fatalf("unlink: %d", st)
	}
	c.wait("LoggedOut", isLoggedOut)
	if st := call(t, base, "GET", path, "", nil); st != 404 {
		t.Fatalf("GET %s after unlink: %d, want 404", path, st)
	}
	if st := call(t, base, "GET", "/devices", "", &devs); st != 200 || len(devs) != 0 {
		t.Fatalf("GET /devices after unlink: %d %+v", st, devs)
	}
}
