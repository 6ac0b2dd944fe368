package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"

	"wasessions/internal/reqparse"
	"wasessions/internal/store"
	"wasessions/internal/views"
)

// envelope is the response shape clients rely on (docs/ARCHITECTURE.md,
// "Compatibility"): {"success","data","message"} on
// success, {"success":false,"error":{"code","message"}} on failure.
type envelope struct {
	Success bool       `json:"success"`
	Data    any        `json:"data,omitempty"`
	Message string     `json:"message,omitempty"`
	Error   *errorBody `json:"error,omitempty"`
}

type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Details carries machine-readable context where it helps the client
	// act: the session id of a create whose task could not be queued, which
	// store /readyz found down.
	Details any `json:"details,omitempty"`
}

// ok answers status with data and a human-readable message.
func ok(c *fiber.Ctx, status int, data any, message string) error {
	return c.Status(status).JSON(envelope{Success: true, Data: data, Message: message})
}

// okSession is ok(c, 200, sessionView{v}, message), the same bytes
// (views.Session.AppendJSON, TestStatusAnswerIsEncodingJSON) without
// encoding/json's reflection: GET /status is the route clients poll.
func okSession(c *fiber.Ctx, v views.Session, message string) error {
	var buf [1024]byte
	b, encoded := v.AppendJSON(append(buf[:0], `{"success":true,"data":`...))
	if !encoded {
		return ok(c, http.StatusOK, sessionView{v}, message)
	}
	if message != "" {
		b = views.AppendJSONString(append(b, `,"message":`...), message)
	}
	c.Status(http.StatusOK)
	c.Response().SetBody(append(b, '}'))
	c.Response().Header.SetContentType(fiber.MIMEApplicationJSON)
	return nil
}

// apiError is an error a handler answers with on purpose: status, stable
// code and a message safe to show the client. Err, if any, is only logged.
type apiError struct {
	Status  int
	Code    string
	Message string
	Details any
	Err     error
	// Header is set on the response (e.g. WWW-Authenticate).
	Header map[string]string
}

func (e *apiError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %s: %v", e.Status, e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
}

func (e *apiError) Unwrap() error { return e.Err }

func fail(status int, code, message string) *apiError {
	return &apiError{Status: status, Code: code, Message: message}
}

// Error codes that are not tied to a single handler.
const (
	codeDatabaseUnavailable = "database_unavailable"
	codeRedisUnavailable    = "redis_unavailable"
	codeInternal            = "internal_error"
	codeNotFound            = "not_found"
	codeSessionNotFound     = "session_not_found"
	codeUnsupportedEncoding = "unsupported_content_encoding"
	codeTooManyStreams      = "too_many_streams"
)

// redisError marks an error that came from Redis (asynq, pub/sub, ping).
// asynq turns some go-redis errors into strings, so the kind of a queue
// failure cannot always be recovered from the error chain: the handler
// that made the call knows it was Redis, and says so.
type redisError struct{ err error }

func (e *redisError) Error() string { return "redis: " + e.err.Error() }
func (e *redisError) Unwrap() error { return e.err }

func redisFailure(err error) error { return &redisError{err: err} }

// queueUnavailable is the 503 a handler answers when Redis refused a task
// or a subscription; details says what was nevertheless done.
func queueUnavailable(err error, message string, details any) *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Code: codeRedisUnavailable,
		Message: message, Details: details, Err: redisFailure(err)}
}

// fiberCodes names fiber's own errors (routing, body limit, parsing).
var fiberCodes = map[int]string{
	http.StatusBadRequest:                  "bad_request",
	http.StatusNotFound:                    codeNotFound,
	http.StatusMethodNotAllowed:            "method_not_allowed",
	http.StatusRequestTimeout:              "request_timeout",
	http.StatusRequestEntityTooLarge:       "payload_too_large",
	http.StatusRequestHeaderFieldsTooLarge: "headers_too_large",
	http.StatusUnsupportedMediaType:        "unsupported_media_type",
	http.StatusServiceUnavailable:          "service_unavailable",
}

var fiberMessages = map[int]string{
	http.StatusNotFound:              "no such route",
	http.StatusMethodNotAllowed:      "method not allowed on this route",
	http.StatusRequestEntityTooLarge: "request body exceeds the 1 MiB limit",
}

// classify maps any error a handler or fiber returned to the answer: an
// apiError as is; Redis and Postgres outages to 503 with a code naming the
// store; fiber's errors to their status; everything else to a 500 whose
// body says nothing about the cause.
func classify(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var re *redisError
	if errors.As(err, &re) || errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolTimeout) {
		return &apiError{Status: http.StatusServiceUnavailable, Code: codeRedisUnavailable,
			Message: "Redis is unavailable; retry shortly", Err: err}
	}
	if store.IsUnavailable(err) {
		return &apiError{Status: http.StatusServiceUnavailable, Code: codeDatabaseUnavailable,
			Message: "the database is unavailable; retry shortly", Err: err}
	}
	var fe *fiber.Error
	if errors.As(err, &fe) {
		code, known := fiberCodes[fe.Code]
		if !known {
			code = strings.ReplaceAll(strings.ToLower(http.StatusText(fe.Code)), " ", "_")
			if code == "" {
				code = "http_error"
			}
		}
		msg, known := fiberMessages[fe.Code]
		if !known {
			msg = strings.ToLower(http.StatusText(fe.Code))
		}
		if fe.Code >= 500 {
			return &apiError{Status: fe.Code, Code: code, Message: msg, Err: err}
		}
		return &apiError{Status: fe.Code, Code: code, Message: msg}
	}
	return &apiError{Status: http.StatusInternalServerError, Code: codeInternal,
		Message: "internal server error", Err: err}
}

// writeError answers err and returns what was sent; the caller logs it
// (with the cause, for a 5xx) in the request's one log line.
func writeError(c *fiber.Ctx, err error) *apiError {
	ae := classify(err)
	for k, v := range ae.Header {
		c.Set(k, v)
	}
	if ae.Status == http.StatusServiceUnavailable {
		c.Set(fiber.HeaderRetryAfter, "5")
	}
	// A failed write leaves nothing more to do: the client is gone.
	_ = c.Status(ae.Status).JSON(envelope{Success: false, Error: &errorBody{Code: ae.Code, Message: ae.Message, Details: ae.Details}})
	return ae
}

// refusal turns reqparse's refusal of a request into the API's error (the
// same status, code and sentence); other errors pass unchanged.
func refusal(err error) error {
	var r *reqparse.Refusal
	if errors.As(err, &r) {
		return fail(r.Status, r.Code, r.Message)
	}
	return err
}
