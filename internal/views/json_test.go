package views_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"wasessions/internal/store"
	"wasessions/internal/views"
)

func ptr[T any](v T) *T { return &v }

// tricky are strings that encoding/json escapes: quotes, backslashes,
// HTML, control characters, invalid UTF-8, U+2028/U+2029, and plain
// multi-byte text.
var tricky = []string{
	"", "plain", `"quoted" \back\`, "<script>&amp;</script>", "tab\tnew\nline\rfeed\fbell\b\x00\x01\x1f\x7f",
	"bad utf8 \xff\xfe and \xc3", "line\u2028para\u2029end", "Zoë 🙂 日本語", "+4915112345678",
}

// TestAppendJSONIsEncodingJSON: the status view encoded by hand is byte
// for byte what encoding/json writes, for every field null and set, with
// strings encoding/json escapes and times with and without fractions.
func TestAppendJSONIsEncodingJSON(t *testing.T) {
	at := time.Date(2026, 12, 2, 6, 30, 1, 123456789, time.UTC)
	whole := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []views.Session{
		{},
		{SessionID: "whatsapp_u_1", Status: "qr", DesiredState: store.DesiredLinked, CreatedAt: at, UpdatedAt: whole},
		{
			SessionID: "s", Status: "connected", StatusReason: ptr(store.Reason("restored")), DesiredState: store.DesiredGone,
			IsConnected: true, IsAuthenticated: true, PhoneNumber: ptr("+49151"), UserName: ptr("Zoë"), PairingCode: ptr("ABCD-EFGH"),
			LastSeen: ptr(at.Add(time.Microsecond)), ExpiresAt: ptr(whole), CreatedAt: at.Add(-time.Hour), UpdatedAt: at,
			LastError: ptr("the phone is offline"), LastErrorCode: ptr(store.ErrorCode("phone_offline")), BannedUntil: ptr(at.Add(time.Millisecond)),
		},
		{CreatedAt: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), UpdatedAt: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)},
	}
	for _, s := range tricky {
		cases = append(cases, views.Session{SessionID: s, Status: s, StatusReason: ptr(store.Reason(s)), DesiredState: store.DesiredState(s),
			PhoneNumber: ptr(s), UserName: ptr(s), PairingCode: ptr(s), LastError: ptr(s), LastErrorCode: ptr(store.ErrorCode(s))})
	}
	for i, v := range cases {
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := v.AppendJSON([]byte("prefix"))
		if !ok || !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Errorf("case %d: AppendJSON = %q, %v\nencoding/json = %q", i, got, ok, want)
		}
	}
}

// A time encoding/json refuses is refused too (the caller then answers
// with encoding/json's error), and nothing is appended.
func TestAppendJSONRefusesWhatEncodingJSONRefuses(t *testing.T) {
	for _, year := range []int{-1, 10000} {
		v := views.Session{BannedUntil: ptr(time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC))}
		if _, err := json.Marshal(v); err == nil {
			t.Fatalf("year %d: encoding/json accepted it", year)
		}
		if got, ok := v.AppendJSON([]byte("x")); ok || string(got) != "x" {
			t.Errorf("year %d: AppendJSON = %q, %v; want refused", year, got, ok)
		}
	}
}

// FuzzAppendJSONString: any string, as encoding/json writes it.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range tricky {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := views.AppendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("AppendJSONString(%q) = %q; encoding/json = %q", s, got, want)
		}
	})
}
