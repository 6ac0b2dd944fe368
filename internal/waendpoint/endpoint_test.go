package waendpoint

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.mau.fi/whatsmeow"
)

const key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		addr    string
		pubkey  string
		want    Endpoint
		wantErr string
	}{
		{name: "both empty is WhatsApp", want: Endpoint{}},
		{name: "blank is WhatsApp", addr: "  ", pubkey: " ", want: Endpoint{}},
		{name: "valid", addr: "127.0.0.1:5280", pubkey: key, want: Endpoint{Addr: "127.0.0.1:5280", RootKey: [32]byte{
			0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
			0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}}},
		{name: "upper-case hex", addr: "waemu:5280", pubkey: strings.ToUpper(key), want: Endpoint{Addr: "waemu:5280", RootKey: [32]byte{
			0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
			0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}}},
		{name: "addr without key", addr: "127.0.0.1:5280", wantErr: "no root key"},
		{name: "key without addr", pubkey: key, wantErr: "no server address"},
		{name: "addr without port", addr: "127.0.0.1", pubkey: key, wantErr: "not host:port"},
		{name: "short key", addr: "h:1", pubkey: key[:62], wantErr: "64 hex characters"},
		{name: "long key", addr: "h:1", pubkey: key + "00", wantErr: "64 hex characters"},
		{name: "not hex", addr: "h:1", pubkey: "zz" + key[2:], wantErr: "not hex"},
		{name: "zero key", addr: "h:1", pubkey: strings.Repeat("0", 64), wantErr: "all zeros"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.addr, tt.pubkey)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q, %q) error = %v, want one containing %q", tt.addr, tt.pubkey, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q, %q): %v", tt.addr, tt.pubkey, err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q, %q) = %+v, want %+v", tt.addr, tt.pubkey, got, tt.want)
			}
			if got.IsWhatsApp() != (tt.want.Addr == "") {
				t.Fatalf("IsWhatsApp() = %v for %+v", got.IsWhatsApp(), got)
			}
		})
	}
}

func TestRewriterSendsWhatsAppToAddr(t *testing.T) {
	var gotPath, gotHost string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath, gotHost = r.URL.Path, r.Host
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	e, err := Parse(addr, key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.HTTPClient().Get("https://web.whatsapp.com/ws/chat")
	if err != nil {
		t.Fatalf("request to rewritten URL: %v", err)
	}
	resp.Body.Close()
	if gotPath != "/ws/chat" || gotHost != addr {
		t.Fatalf("server saw path %q host %q, want /ws/chat on %s", gotPath, gotHost, addr)
	}

	// Other hosts are not rewritten: this one must reach the test server
	// directly under its own address.
	gotPath = ""
	resp, err = e.HTTPClient().Get(srv.URL + "/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if gotPath != "/other" {
		t.Fatalf("pass-through request reached path %q", gotPath)
	}
}

func TestInstallRootKey(t *testing.T) {
	orig := whatsmeow.WACertPubKey
	t.Cleanup(func() { whatsmeow.WACertPubKey = orig })

	Endpoint{}.InstallRootKey()
	if whatsmeow.WACertPubKey != orig {
		t.Fatal("the zero Endpoint changed the trusted WhatsApp key")
	}
	e, err := Parse("127.0.0.1:5280", key)
	if err != nil {
		t.Fatal(err)
	}
	e.InstallRootKey()
	if whatsmeow.WACertPubKey != e.RootKey {
		t.Fatalf("WACertPubKey = %x, want %x", whatsmeow.WACertPubKey, e.RootKey)
	}
}
