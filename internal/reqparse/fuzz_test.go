package reqparse_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"wasessions/internal/reqparse"
)

// FuzzParseCreateSession feeds POST /session's body parser anything: it
// never panics, refuses with the documented 400 or 415 codes only, and
// what it accepts is an object whose phone number, if any, is E.164.
// `make test` fuzzes it for a few seconds (scripts/test.sh), `make fuzz`
// longer (scripts/fuzz.sh).
func FuzzParseCreateSession(f *testing.F) {
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
		req, err := reqparse.ParseCreateSession(contentType, body)
		if err != nil {
			var r *reqparse.Refusal
			if !errors.As(err, &r) {
				t.Fatalf("not a Refusal: %T %v", err, err)
			}
			switch {
			case r.Status == http.StatusBadRequest && (r.Code == "invalid_json" || r.Code == "invalid_request" || r.Code == "invalid_phone_number"):
			case r.Status == http.StatusUnsupportedMediaType && r.Code == "unsupported_media_type":
			default:
				t.Fatalf("undocumented refusal %d %s", r.Status, r.Code)
			}
			return
		}
		if req.PhoneNumber != nil && !isE164(*req.PhoneNumber) {
			t.Fatalf("accepted phone number %q is not E.164", *req.PhoneNumber)
		}
	})
}

// FuzzE164 checks the phone-number rule against an independent statement
// of E.164 (a '+', a non-zero digit, 7 to 15 digits in all), directly and
// for any string sent as phoneNumber.
func FuzzE164(f *testing.F) {
	for _, s := range []string{"+15551234567", "+1555123", "+155512", "+123456789012345", "+1234567890123456",
		"+01234567", "15551234567", "+1 555 123 4567", "+١٥٥٥١٢٣٤٥٦٧", "+15551234567\n", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, phone string) {
		if got, want := reqparse.E164(phone), isE164(phone); got != want {
			t.Fatalf("E164(%q) = %v, want %v", phone, got, want)
		}
		body, err := json.Marshal(map[string]string{"phoneNumber": phone})
		if err != nil {
			// encoding/json encodes every Go string (invalid UTF-8 becomes
			// U+FFFD), so this cannot happen; if it ever does, say so.
			t.Fatalf("marshal phoneNumber %q: %v", phone, err)
		}
		req, err := reqparse.ParseCreateSession("application/json", body)
		accepted := err == nil
		if want := isE164(phone); accepted != want {
			t.Fatalf("phoneNumber %q: accepted=%v, want %v (err %v)", phone, accepted, want, err)
		}
		if accepted && *req.PhoneNumber != phone {
			t.Fatalf("phoneNumber %q came out as %q", phone, *req.PhoneNumber)
		}
	})
}

// FuzzBearer feeds the Authorization scheme parser anything: it never
// panics, and it accepts exactly "Bearer" (any case), one space, and a
// token, with surrounding spaces ignored; the token it returns has no
// surrounding space and is what the header carried.
func FuzzBearer(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer  abc ", "BEARER a.b.c", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz",
		" Bearer x", "Bearerx y", "Bearer\tx", "", "Bearer a b", "Bearer \x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		token, ok := reqparse.Bearer(header)
		trimmed := strings.TrimSpace(header)
		wantOK := len(trimmed) > 7 && strings.EqualFold(trimmed[:7], "bearer ") && strings.TrimSpace(trimmed[7:]) != ""
		if ok != wantOK {
			t.Fatalf("Bearer(%q) ok = %v, want %v", header, ok, wantOK)
		}
		if !ok {
			if token != "" {
				t.Fatalf("Bearer(%q) refused but returned token %q", header, token)
			}
			return
		}
		if token != strings.TrimSpace(token) || token == "" || token != strings.TrimSpace(trimmed[7:]) {
			t.Fatalf("Bearer(%q) = %q", header, token)
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

// FuzzParseSendMessage feeds POST /messages' body parser anything: it
// never panics, refuses with the documented 400 or 415 codes only, and
// what it accepts is an E.164 recipient and a text that is not blank, is
// valid UTF-8 and has at most MaxMessageText characters.
func FuzzParseSendMessage(f *testing.F) {
	for _, seed := range []struct {
		ct, body string
	}{
		{"application/json", `{"to":"+15557654321","text":"hi"}`},
		{"application/json; charset=utf-8", `{"to":"+15557654321","text":"héllo \ud83d\ude00"}`},
		{"application/json", `{"to":"+15557654321","text":"   "}`},
		{"application/json", `{"to":"+15557654321","text":""}`},
		{"application/json", `{"to":"15557654321","text":"x"}`},
		{"application/json", `{"to":15557654321,"text":"x"}`},
		{"application/json", `{"to":"+15557654321","text":5}`},
		{"application/json", `{"to":"+15557654321","text":"x","extra":1}`},
		{"application/json", `{"to":"+15557654321","text":"x"} {}`},
		{"application/json", `{"to":"+15557654321","text":"\udc00"}`},
		{"application/json", `{"to":"+15557654321","text":"` + strings.Repeat("é", 4097) + `"}`},
		{"application/json", ``},
		{"text/plain", `{"to":"+15557654321","text":"x"}`},
		{"application/json", `[]`},
	} {
		f.Add(seed.ct, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		req, err := reqparse.ParseSendMessage(contentType, body)
		if err != nil {
			var r *reqparse.Refusal
			if !errors.As(err, &r) {
				t.Fatalf("not a Refusal: %T %v", err, err)
			}
			switch {
			case r.Status == http.StatusBadRequest && (r.Code == "invalid_json" || r.Code == "invalid_request" ||
				r.Code == "invalid_phone_number" || r.Code == "invalid_text"):
			case r.Status == http.StatusUnsupportedMediaType && r.Code == "unsupported_media_type":
			default:
				t.Fatalf("undocumented refusal %d %s", r.Status, r.Code)
			}
			return
		}
		if !isE164(req.To) {
			t.Fatalf("accepted recipient %q is not E.164", req.To)
		}
		if strings.TrimSpace(req.Text) == "" || !utf8.ValidString(req.Text) || utf8.RuneCountInString(req.Text) > reqparse.MaxMessageText {
			t.Fatalf("accepted text of %d characters (valid UTF-8 %v): %.40q", utf8.RuneCountInString(req.Text), utf8.ValidString(req.Text), req.Text)
		}
	})
}
