package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime"
	"net/http"

	"github.com/gofiber/fiber/v2"

	"wasessions/internal/store"
	"wasessions/internal/wa"
)

// proxyRequest is PUT /admin/sessions/{sessionId}/proxy's body: a proxy
// URL, or null to clear it.
type proxyRequest struct {
	Proxy *string `json:"proxy"`
}

// proxyView is its answer. The proxy is shown without its password: an
// admin who set it knows it, and API answers end up in logs and tickets.
type proxyView struct {
	SessionID string  `json:"sessionId"`
	Proxy     *string `json:"proxy"`
}

// maxProxyURL bounds the proxy URL an admin can store.
const maxProxyURL = 512

// setSessionProxy is PUT /api/integrations/admin/sessions/{sessionId}/proxy
// (admin only): the session's WhatsApp traffic goes through this proxy
// (socks5://, http:// or https://, optionally user:password@), overriding
// the worker's WA_PROXY, from the next time a worker hosts it (a restore,
// a handoff, a move to another worker).
func (s *server) setSessionProxy(c *fiber.Ctx) error {
	mt, _, err := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	if err != nil || mt != fiber.MIMEApplicationJSON {
		return fail(http.StatusUnsupportedMediaType, "unsupported_media_type",
			"the body must be JSON with Content-Type: application/json")
	}
	var req proxyRequest
	dec := json.NewDecoder(bytes.NewReader(c.Request().Body()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return fail(http.StatusBadRequest, "invalid_request", `the body must be {"proxy": "socks5://host:port"} or {"proxy": null}`)
	}
	if dec.More() {
		return fail(http.StatusBadRequest, "invalid_json", "the request body must hold a single JSON object")
	}
	proxy := ""
	if req.Proxy != nil {
		proxy = *req.Proxy
		if len(proxy) > maxProxyURL {
			return fail(http.StatusBadRequest, "invalid_proxy", "proxy must be at most 512 characters")
		}
		if _, err := wa.ParseProxy(proxy); err != nil {
			// The message never repeats the URL: it may hold a password.
			return fail(http.StatusBadRequest, "invalid_proxy", "proxy "+err.Error())
		}
	}
	ctx := s.requestContext()
	sess, err := s.deps.Store.SetProxy(ctx, c.Params("sessionId"), proxy)
	if errors.Is(err, store.ErrNotFound) {
		return fail(http.StatusNotFound, codeSessionNotFound, "no session with this id")
	}
	if err != nil {
		return err
	}
	view := proxyView{SessionID: sess.SessionID}
	if sess.ProxyURL != nil {
		shown := wa.RedactProxy(*sess.ProxyURL)
		view.Proxy = &shown
	}
	s.log.InfoContext(ctx, "session proxy set by an admin", "session_id", sess.SessionID, "proxy", view.Proxy != nil)
	return ok(c, http.StatusOK, view, "Proxy set; it applies from the next time a worker hosts the session")
}
