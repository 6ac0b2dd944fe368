package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
)

// FuzzParseCreateBody feeds POST /session's body parser anything: it
// never panics, refuses with the documented 400 or 415 codes only, and
// what it accepts is an object whose phone number, if any, is E.164.
// scripts/fuzz.sh runs it (briefly in `make test`, longer in `make fuzz`).
func FuzzParseCreateBody(f *testing.F) {
	for _, seed := range []struct {
		ct, body string
	}{
		{"application/json", ``},
		{"application/json", `{}`},
		{"application/json", `{"phoneNumber":"+15551234567"}`},
		{"application/json; charset=utf-8", `{"phoneNumber":null}`},
		{"application/json", `{"phoneNumber":15551234567}`},
		{"application/json", `{"phoneNumber":"+1\u0035551234567"}`},
		{"application/json", `{"phone":"x"}`},
		{"application/json", `[1,2]`},
		{"application/json", `{} {}`},
		{"application/json", `{"phoneNumber":"+15551234567","phoneNumber":"+0"}`},
		{"text/plain", `{}`},
		{"", `{}`},
		{"application/json", "\xef\xbb\xbf{}"},
	} {
		f.Add(seed.ct, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		req, err := parseCreateBody(contentType, body)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				t.Fatalf("not an apiError: %T %v", err, err)
			}
			switch {
			case ae.Status == http.StatusBadRequest && (ae.Code == "invalid_json" || ae.Code == "invalid_request" || ae.Code == "invalid_phone_number"):
			case ae.Status == http.StatusUnsupportedMediaType && ae.Code == "unsupported_media_type":
			default:
				t.Fatalf("undocumented refusal %d %s", ae.Status, ae.Code)
			}
			return
		}
		if req.PhoneNumber != nil && !isE164(*req.PhoneNumber) {
			t.Fatalf("accepted phone number %q is not E.164", *req.PhoneNumber)
		}
	})
}

// FuzzPhoneNumber checks the phone-number rule against an independent
// statement of E.164 (a '+', a non-zero digit, 7 to 15 digits in all),
// for any string sent as phoneNumber.
func FuzzPhoneNumber(f *testing.F) {
	for _, s := range []string{"+15551234567", "+1555123", "+155512", "+123456789012345", "+1234567890123456",
		"+01234567", "15551234567", "+1 555 123 4567", "+١٥٥٥١٢٣٤٥٦٧", "+15551234567\n", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, phone string) {
		body, err := json.Marshal(map[string]string{"phoneNumber": phone})
		if err != nil {
			// encoding/json encodes every Go string (invalid UTF-8 becomes
			// U+FFFD), so this cannot happen; if it ever does, say so.
			t.Fatalf("marshal phoneNumber %q: %v", phone, err)
		}
		req, err := parseCreateBody("application/json", body)
		accepted := err == nil
		if want := isE164(phone); accepted != want {
			t.Fatalf("phoneNumber %q: accepted=%v, want %v (err %v)", phone, accepted, want, err)
		}
		if accepted && *req.PhoneNumber != phone {
			t.Fatalf("phoneNumber %q came out as %q", phone, *req.PhoneNumber)
		}
		if accepted {
			if shown := e164(&phone); *shown != phone {
				t.Fatalf("e164(%q) = %q", phone, *shown)
			}
		}
	})
}

// isE164 is E.164 spelled out without a regular expression.
func isE164(s string) bool {
	if len(s) < 8 || len(s) > 16 || s[0] != '+' || s[1] < '1' || s[1] > '9' {
		return false
	}
	for i := 2; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
