package views

import (
	"time"
	"unicode/utf8"
)

// AppendJSON appends s as encoding/json marshals it, byte for byte
// (TestAppendJSONIsEncodingJSON), without reflection: GET /status, which
// clients poll, spent more of its CPU in encoding/json than in reading
// the row. ok is false, and nothing is appended, for what encoding/json
// refuses (a time outside years 0 to 9999): the caller then takes
// encoding/json's path and its error. Keep the fields in Session's order.
func (s Session) AppendJSON(b []byte) (_ []byte, ok bool) {
	for _, t := range [...]*time.Time{s.LastSeen, s.ExpiresAt, &s.CreatedAt, &s.UpdatedAt, s.BannedUntil} {
		if t != nil && (t.Year() < 0 || t.Year() > 9999) {
			return b, false
		}
	}
	b = append(b, `{"sessionId":`...)
	b = AppendJSONString(b, s.SessionID)
	b = append(b, `,"status":`...)
	b = AppendJSONString(b, s.Status)
	b = append(b, `,"statusReason":`...)
	b = appendStringPtr(b, s.StatusReason)
	b = append(b, `,"desiredState":`...)
	b = AppendJSONString(b, string(s.DesiredState))
	b = append(b, `,"isConnected":`...)
	b = appendBool(b, s.IsConnected)
	b = append(b, `,"isAuthenticated":`...)
	b = appendBool(b, s.IsAuthenticated)
	b = append(b, `,"phoneNumber":`...)
	b = appendStringPtr(b, s.PhoneNumber)
	b = append(b, `,"userName":`...)
	b = appendStringPtr(b, s.UserName)
	b = append(b, `,"pairingCode":`...)
	b = appendStringPtr(b, s.PairingCode)
	b = append(b, `,"lastSeen":`...)
	b = appendTimePtr(b, s.LastSeen)
	b = append(b, `,"expiresAt":`...)
	b = appendTimePtr(b, s.ExpiresAt)
	b = append(b, `,"createdAt":`...)
	b = appendTime(b, s.CreatedAt)
	b = append(b, `,"updatedAt":`...)
	b = appendTime(b, s.UpdatedAt)
	b = append(b, `,"lastError":`...)
	b = appendStringPtr(b, s.LastError)
	b = append(b, `,"lastErrorCode":`...)
	b = appendStringPtr(b, s.LastErrorCode)
	b = append(b, `,"bannedUntil":`...)
	b = appendTimePtr(b, s.BannedUntil)
	return append(b, '}'), true
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, "true"...)
	}
	return append(b, "false"...)
}

func appendStringPtr[T ~string](b []byte, p *T) []byte {
	if p == nil {
		return append(b, "null"...)
	}
	return AppendJSONString(b, string(*p))
}

// appendTime is time.Time's MarshalJSON for a year in 0..9999.
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

func appendTimePtr(b []byte, t *time.Time) []byte {
	if t == nil {
		return append(b, "null"...)
	}
	return appendTime(b, *t)
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string exactly as encoding/json's
// Marshal writes it: <, > and & escaped for HTML, control characters as
// \n-style or \u00XX escapes, invalid UTF-8 as \ufffd, and U+2028 and
// U+2029 escaped.
func AppendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
