package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"wasessions/internal/auth"
)

// The API's paths, as a frontend calls them.
const (
	pathSession    = "/api/integrations/whatsapp/session"
	pathQR         = "/api/integrations/whatsapp/qr"
	pathStatus     = "/api/integrations/whatsapp/status"
	pathDisconnect = "/api/integrations/whatsapp/disconnect"
	pathEvents     = "/api/integrations/whatsapp/events"
	pathStats      = "/api/integrations/sessions/stats"
	pathCleanup    = "/api/integrations/sessions/cleanup"
)

// apiClient talks to cmd/api over HTTP with tokens signed by the same
// JWT_SECRET.
type apiClient struct {
	base   string
	http   *http.Client
	signer *auth.Signer
}

// session is the API's session view (POST /session adds qrCode, qrRaw).
type session struct {
	SessionID       string     `json:"sessionId"`
	Status          string     `json:"status"`
	StatusReason    *string    `json:"statusReason"`
	DesiredState    string     `json:"desiredState"`
	IsConnected     bool       `json:"isConnected"`
	IsAuthenticated bool       `json:"isAuthenticated"`
	PhoneNumber     *string    `json:"phoneNumber"`
	UserName        *string    `json:"userName"`
	ExpiresAt       *time.Time `json:"expiresAt"`
	LastError       *string    `json:"lastError"`
	LastErrorCode   *string    `json:"lastErrorCode"`
	BannedUntil     *time.Time `json:"bannedUntil"`
	QRCode          *string    `json:"qrCode"`
	QRRaw           *string    `json:"qrRaw"`
}

func (s session) reason() string { return str(s.StatusReason) }

func str[T ~string](p *T) string {
	if p == nil {
		return ""
	}
	return string(*p)
}

// response is one API answer: status, envelope, raw body.
type response struct {
	Status int
	Body   []byte
	Env    struct {
		Success bool            `json:"success"`
		Data    json.RawMessage `json:"data"`
		Message string          `json:"message"`
		Error   *struct {
			Code    string         `json:"code"`
			Message string         `json:"message"`
			Details map[string]any `json:"details"`
		} `json:"error"`
	}
}

// code is the error code of a failed answer ("" on success).
func (r response) code() string {
	if r.Env.Error == nil {
		return ""
	}
	return r.Env.Error.Code
}

func (r response) String() string {
	return fmt.Sprintf("%d %s", r.Status, bytes.TrimSpace(r.Body))
}

func (c *apiClient) token(user string, admin bool) string {
	tok, err := c.signer.Sign(user, admin, time.Hour)
	if err != nil {
		panic(err) // a malformed user id is a bug in the test
	}
	return tok
}

// do calls the API as user (no token when user is "").
func (c *apiClient) do(method, path, user string, admin bool) (response, error) {
	var r response
	req, err := http.NewRequest(method, c.base+path, nil)
	if err != nil {
		return r, err
	}
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+c.token(user, admin))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return r, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	r.Status = resp.StatusCode
	r.Body, _ = io.ReadAll(resp.Body)
	if err := json.Unmarshal(r.Body, &r.Env); err != nil {
		return r, fmt.Errorf("%s %s: %d, body is not an envelope: %q", method, path, r.Status, r.Body)
	}
	return r, nil
}

// data calls and decodes a successful answer's data into out; any other
// status than want is an error.
func (c *apiClient) data(method, path, user string, admin bool, want int, out any) (response, error) {
	r, err := c.do(method, path, user, admin)
	if err != nil {
		return r, err
	}
	if r.Status != want {
		return r, fmt.Errorf("%s %s: want %d, got %s", method, path, want, r)
	}
	if out != nil {
		if err := json.Unmarshal(r.Env.Data, out); err != nil {
			return r, fmt.Errorf("%s %s: decode data: %w", method, path, err)
		}
	}
	return r, nil
}

// create is POST /session: the new session (201) or the live one (200).
func (c *apiClient) create(user string) (session, int, error) {
	var s session
	r, err := c.do("POST", pathSession, user, false)
	if err != nil {
		return s, r.Status, err
	}
	if r.Status != http.StatusCreated && r.Status != http.StatusOK {
		return s, r.Status, fmt.Errorf("POST %s: %s", pathSession, r)
	}
	err = json.Unmarshal(r.Env.Data, &s)
	return s, r.Status, err
}

func (c *apiClient) status(user string) (session, error) {
	var s session
	_, err := c.data("GET", pathStatus, user, false, http.StatusOK, &s)
	return s, err
}

// qrView is GET /qr's data.
type qrView struct {
	SessionID string `json:"sessionId"`
	QRCode    string `json:"qrCode"`
	QRRaw     string `json:"qrRaw"`
}

// qr is GET /qr; ok is false while no QR is showing (409 qr_not_ready).
func (c *apiClient) qr(user string) (q qrView, r response, err error) {
	r, err = c.do("GET", pathQR, user, false)
	if err != nil || r.Status != http.StatusOK {
		return q, r, err
	}
	err = json.Unmarshal(r.Env.Data, &q)
	return q, r, err
}

type stats struct {
	Total   int64  `json:"total"`
	Active  int64  `json:"active"`
	Expired int64  `json:"expired"`
	Scope   string `json:"scope"`
}
