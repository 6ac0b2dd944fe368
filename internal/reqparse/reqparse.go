// Package reqparse reads what callers send, before any handler acts on it:
// the session-create and message-send bodies, the E.164 phone-number rule
// and the bearer scheme of an Authorization header. It depends on the standard library
// only, so its fuzz targets build instrumented in seconds and `make test`
// fuzzes them for real on every run (scripts/test.sh), not only replays
// their seeds; internal/httpapi and internal/auth call it.
package reqparse

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Refusal is a request refused for what it carries: the HTTP status, the
// stable error code and a sentence for the caller (the API puts them in
// its error envelope).
type Refusal struct {
	Status  int
	Code    string
	Message string
}

func (r *Refusal) Error() string { return fmt.Sprintf("%d %s: %s", r.Status, r.Code, r.Message) }

func refuse(status int, code, message string) *Refusal {
	return &Refusal{Status: status, Code: code, Message: message}
}

// e164 is E.164: '+', a non-zero country code digit, 7 to 15 digits in
// all (RE2: ASCII digits, $ only at the end of the text).
var e164 = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)

// E164 reports whether s is a phone number in E.164.
func E164(s string) bool { return e164.MatchString(s) }

// CreateSession is POST /session's optional body.
type CreateSession struct {
	// PhoneNumber asks for pairing by phone code instead of a QR code.
	PhoneNumber *string `json:"phoneNumber"`
}

// ParseCreateSession reads POST /session's body as it came on the wire
// (never decompressed): empty is the QR flow; a body must be
// application/json holding one object with known fields, and a phone
// number must be E.164. Refusals: 415 unsupported_media_type, 400
// invalid_json, invalid_request or invalid_phone_number.
func ParseCreateSession(contentType string, body []byte) (CreateSession, error) {
	var req CreateSession
	if len(bytes.TrimSpace(body)) == 0 {
		return req, nil
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "application/json" {
		return req, refuse(http.StatusUnsupportedMediaType, "unsupported_media_type",
			"a request body must be JSON with Content-Type: application/json")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF):
			return req, refuse(http.StatusBadRequest, "invalid_json", "the request body is not valid JSON")
		case errors.As(err, &typ) && typ.Field == "phoneNumber":
			return req, refuse(http.StatusBadRequest, "invalid_phone_number", "phoneNumber must be a string in E.164 format, e.g. +15551234567")
		case errors.As(err, &typ):
			return req, refuse(http.StatusBadRequest, "invalid_request", "the request body must be a JSON object")
		default:
			// DisallowUnknownFields' error names the field, not a value.
			return req, refuse(http.StatusBadRequest, "invalid_request", "the request body has an unknown field: "+err.Error())
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, refuse(http.StatusBadRequest, "invalid_json", "the request body must hold a single JSON object")
	}
	if req.PhoneNumber != nil && !E164(*req.PhoneNumber) {
		return req, refuse(http.StatusBadRequest, "invalid_phone_number", "phoneNumber must be in E.164 format, e.g. +15551234567")
	}
	return req, nil
}

// Bearer returns the token of an Authorization header value of the form
// "Bearer <token>" (the scheme in any case, surrounding spaces ignored);
// ok is false for anything else, an empty token included.
func Bearer(authorization string) (token string, ok bool) {
	scheme, rest, found := strings.Cut(strings.TrimSpace(authorization), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(rest)
	return token, token != ""
}

// MaxMessageText is the longest message text accepted, in characters.
const MaxMessageText = 4096

// SendMessage is POST /messages' body: a text to a phone number.
type SendMessage struct {
	To   string
	Text string
}

// ParseSendMessage reads POST /messages' body as it came on the wire:
// application/json holding one object {"to": E.164, "text": 1 to
// MaxMessageText characters, not blank}, no other field. Refusals: 415
// unsupported_media_type, 400 invalid_json, invalid_request,
// invalid_phone_number or invalid_text.
func ParseSendMessage(contentType string, body []byte) (SendMessage, error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "application/json" {
		return SendMessage{}, refuse(http.StatusUnsupportedMediaType, "unsupported_media_type",
			"the request body must be JSON with Content-Type: application/json")
	}
	var req struct {
		To   *string `json:"to"`
		Text *string `json:"text"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
			return SendMessage{}, refuse(http.StatusBadRequest, "invalid_json", "the request body is not valid JSON")
		case errors.As(err, &typ) && typ.Field == "to":
			return SendMessage{}, refuse(http.StatusBadRequest, "invalid_phone_number", "to must be a string in E.164 format, e.g. +15557654321")
		case errors.As(err, &typ) && typ.Field == "text":
			return SendMessage{}, refuse(http.StatusBadRequest, "invalid_text", "text must be a string")
		case errors.As(err, &typ):
			return SendMessage{}, refuse(http.StatusBadRequest, "invalid_request", "the request body must be a JSON object")
		default:
			// DisallowUnknownFields' error names the field, not a value.
			return SendMessage{}, refuse(http.StatusBadRequest, "invalid_request", "the request body has an unknown field: "+err.Error())
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return SendMessage{}, refuse(http.StatusBadRequest, "invalid_json", "the request body must hold a single JSON object")
	}
	if req.To == nil || !E164(*req.To) {
		return SendMessage{}, refuse(http.StatusBadRequest, "invalid_phone_number", "to must be a phone number in E.164 format, e.g. +15557654321")
	}
	switch {
	case req.Text == nil || strings.TrimSpace(*req.Text) == "":
		return SendMessage{}, refuse(http.StatusBadRequest, "invalid_text", "text must not be empty")
	case !utf8.ValidString(*req.Text):
		return SendMessage{}, refuse(http.StatusBadRequest, "invalid_text", "text must be valid UTF-8")
	case utf8.RuneCountInString(*req.Text) > MaxMessageText:
		return SendMessage{}, refuse(http.StatusBadRequest, "invalid_text", fmt.Sprintf("text must be at most %d characters", MaxMessageText))
	}
	return SendMessage{To: *req.To, Text: *req.Text}, nil
}
