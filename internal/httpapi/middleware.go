package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"wasessions/internal/auth"
)

type localKey int

const (
	observedKey localKey = iota
	identityKey
	sessionIDKey
)

// observe is the outermost middleware: it answers errors (so the status
// is known here), then records the request in the metrics and logs one
// line for it: method, route template, status, duration, user and session
// where known. The Authorization header is never logged.
func (s *server) observe(c *fiber.Ctx) error {
	start := time.Now()
	c.Locals(observedKey, true)
	self := c.Route()
	err := c.Next()
	var failed *apiError
	if err != nil {
		failed = writeError(c, err)
	}
	status := c.Response().StatusCode()
	route := routeLabel(c, self, status)
	d := time.Since(start)
	// fiber's strings point into buffers reused by the next request:
	// ObserveHTTP copies what it keeps, and the log line gets a copy.
	s.metrics.ObserveHTTP(c.Method(), route, status, d)

	level := levelFor(status, route)
	if !s.log.Enabled(c.UserContext(), level) {
		return nil
	}
	method := strings.Clone(c.Method())
	attrs := []any{"method", method, "route", route, "status", status,
		"duration_ms", float64(d.Microseconds()) / 1000}
	if route == "unmatched" {
		attrs = append(attrs, "path", c.Path())
	}
	if id, ok := c.Locals(identityKey).(auth.Identity); ok {
		attrs = append(attrs, "user_id", id.UserID)
	}
	if sid, ok := c.Locals(sessionIDKey).(string); ok {
		attrs = append(attrs, "session_id", sid)
	}
	if failed != nil {
		attrs = append(attrs, "error_code", failed.Code)
		if failed.Status >= 500 && failed.Err != nil {
			attrs = append(attrs, "error", failed.Err.Error())
		}
	}
	s.log.Log(c.UserContext(), level, "request", attrs...)
	return nil
}

// levelFor is a request line's log level: errors for 500s, warnings for
// 503s (a store is down: the API is fine, the cause is logged), debug for
// probes, scrapes, the monitor's polling and a status read that succeeded
// (clients poll it: a line per poll would be most of the log, and of the
// route's cost), info for the rest.
func levelFor(status int, route string) slog.Level {
	switch {
	case status == http.StatusServiceUnavailable:
		return slog.LevelWarn
	case status >= 500:
		return slog.LevelError
	case route == "/healthz" || route == "/readyz" || route == "/metrics" || route == "/monitor/*":
		return slog.LevelDebug
	case route == statusRoute && status < 400:
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// routeLabel is the route template for metrics and logs: bounded, never
// the raw path of an unmatched request. self is observe's own route: if
// it is still the current one, no other route matched.
func routeLabel(c *fiber.Ctx, self *fiber.Route, status int) string {
	r := c.Route()
	switch {
	case r == self || len(r.Handlers) == 0:
		return "unmatched"
	case strings.HasPrefix(r.Path, "/monitor"):
		return "/monitor/*"
	case r.Path == "/" && (status == http.StatusNotFound || status == http.StatusMethodNotAllowed):
		return "unmatched" // the static files had nothing there
	case r.Path == "/":
		return "/*" // static files
	}
	return r.Path
}

// recoverPanic turns a panic in a handler into a 500 whose body says only
// "internal server error"; the panic value and stack go to the log.
func (s *server) recoverPanic(c *fiber.Ctx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.ErrorContext(c.UserContext(), "panic in handler", "method", c.Method(), "route", c.Route().Path,
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = &apiError{Status: http.StatusInternalServerError, Code: codeInternal,
				Message: "internal server error", Err: fmt.Errorf("panic: %v", r)}
		}
	}()
	return c.Next()
}

// refuseEncodedBodies answers 415 to any request that declares a
// Content-Encoding other than identity. fiber's c.Body() undoes gzip, br
// and deflate, layer after layer, with no cap on the result, while
// BodyLimit counts only the bytes on the wire: a few hundred bytes of
// double gzip expand to gigabytes. None of our routes needs an encoded
// body, so the request is refused before anything reads it, and handlers
// read the raw body (c.Request().Body()) besides.
func refuseEncodedBodies(c *fiber.Ctx) error {
	enc := strings.TrimSpace(string(c.Request().Header.Peek(fiber.HeaderContentEncoding)))
	if enc == "" || strings.EqualFold(enc, "identity") {
		return c.Next()
	}
	return fail(http.StatusUnsupportedMediaType, codeUnsupportedEncoding,
		"request bodies must not be compressed: send them without Content-Encoding")
}

// authenticate requires a valid bearer token and stores the caller's
// identity for the handler. It is attached to each API route rather than
// to a prefix, so that an unknown path is a 404 whatever the token.
func (s *server) authenticate(c *fiber.Ctx) error {
	id, err := s.deps.Verifier.VerifyHeader(c.Get(fiber.HeaderAuthorization))
	if err != nil {
		var ae *auth.Error
		if !errors.As(err, &ae) {
			return err
		}
		return &apiError{Status: http.StatusUnauthorized, Code: string(ae.Code), Message: ae.Msg,
			Header: map[string]string{fiber.HeaderWWWAuthenticate: `Bearer realm="wasessions", error="invalid_token"`}}
	}
	c.Locals(identityKey, id)
	return c.Next()
}

// identity is the caller authenticate verified.
func identity(c *fiber.Ctx) auth.Identity {
	id, _ := c.Locals(identityKey).(auth.Identity)
	return id
}

// requireAdmin lets only tokens with role admin through (403 otherwise).
func requireAdmin(c *fiber.Ctx) error {
	if !identity(c).Admin {
		return fail(http.StatusForbidden, "forbidden", "this operation needs a token with role admin")
	}
	return c.Next()
}

// noteSession puts the session id into the request's log line.
func noteSession(c *fiber.Ctx, sessionID string) { c.Locals(sessionIDKey, sessionID) }

// basicAuth guards /monitor. Both user and password are compared in
// constant time over their hashes, so neither their content nor their
// length leaks through timing.
func basicAuth(user, password string) fiber.Handler {
	wantUser, wantPass := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(password))
	return func(c *fiber.Ctx) error {
		scheme, cred, _ := strings.Cut(c.Get(fiber.HeaderAuthorization), " ")
		if strings.EqualFold(scheme, "Basic") {
			if raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred)); err == nil {
				u, p, _ := strings.Cut(string(raw), ":")
				gu, gp := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))
				if subtle.ConstantTimeCompare(gu[:], wantUser[:])&subtle.ConstantTimeCompare(gp[:], wantPass[:]) == 1 {
					return c.Next()
				}
			}
		}
		return &apiError{Status: http.StatusUnauthorized, Code: "monitor_unauthorized",
			Message: "the monitor needs HTTP basic auth (MONITOR_USER, MONITOR_PASSWORD)",
			Header:  map[string]string{fiber.HeaderWWWAuthenticate: `Basic realm="asynqmon", charset="UTF-8"`}}
	}
}

// requestContext bounds a handler's work against the stores by
// RequestTimeout. The context is shared with the requests that started in
// the same tick and ends at its deadline (see deadlines): there is nothing
// for a handler to cancel.
func (s *server) requestContext() context.Context {
	return s.deadlines.context()
}

// redisBudget bounds each call a request makes to Redis whose failure has
// an answer of its own: an enqueue (a 503 redis_unavailable saying what was
// recorded, or a warning where the work is durable and the reconciler
// redoes it) and the start of an event-hub subscription. A healthy Redis
// answers in milliseconds, so a Redis that has not answered in a second is
// hung or gone; waiting out the request's whole RequestTimeout (10 s) on it
// would only keep the user from the same answer. A command cut short
// still may have reached Redis: every enqueue here has a deterministic
// task id and every answer promises only what Postgres holds, so either
// way the user's retry, or the reconciler, ends in the same state.
const redisBudget = time.Second

// redisContext is ctx bounded by redisBudget as well as by whatever
// deadline ctx has (the request's), the earlier winning. It bounds the
// wait because the Redis client honours context deadlines
// (redisconn.Options, ContextTimeoutEnabled).
func (s *server) redisContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, min(redisBudget, s.opts.RequestTimeout))
}
