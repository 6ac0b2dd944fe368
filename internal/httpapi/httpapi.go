// Package httpapi is the service's HTTP API on fiber: the session
// endpoints and envelopes (kept for compatibility, docs/ARCHITECTURE.md), the admin endpoints, the live event stream,
// health, readiness, metrics, the OpenAPI document and asynqmon.
//
// New builds the whole app from explicit dependencies (no globals, no init
// side effects), so a test builds one per test on its own database and
// Redis, and cmd/api only wires configuration to it. The routes are all in
// routes.go; handlers are small and return errors, which one error handler
// (respond.go) turns into the error envelope: apiError as chosen by the
// handler, Postgres or Redis outages as 503 with a code naming the store,
// fiber's own errors (404, 405, 413) by status, anything else as a 500 that
// says nothing about its cause (the cause goes to the log).
package httpapi

import (
	"context"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"

	"wasessions/internal/apimetrics"
	"wasessions/internal/auth"
	"wasessions/internal/events"
	"wasessions/internal/queue"
	"wasessions/internal/ratelimit"
	"wasessions/internal/store"
	"wasessions/internal/webhook"
)

// BodyLimit is the largest request body accepted (413 above it).
const BodyLimit = 1 << 20

// Deps are the services the API talks to. All but Metrics and Monitor
// are required.
type Deps struct {
	Store    *store.Store
	Enqueuer *queue.Enqueuer
	// Bus publishes what the API itself changes (the admin cleanup).
	Bus *events.Bus
	// Hub is the process's one subscription to session events, shared by
	// every event stream and every create waiting for its first QR code.
	Hub *events.Hub
	// Redis is the process's one client (the one Enqueuer and Bus use),
	// pinged by /readyz and by the queue metrics.
	Redis    redis.UniversalClient
	Verifier *auth.Verifier
	Log      *slog.Logger
	// Metrics, when nil, is built on Store and Enqueuer's inspector.
	Metrics *apimetrics.Metrics
	// Limiter counts the request rate limits (Options.Limits) in Redis;
	// without it nothing is limited.
	Limiter *ratelimit.Limiter
	// Monitor is asynqmon (see NewMonitor), served at /monitor behind
	// basic auth; without it, or without Options.MonitorPassword,
	// /monitor answers 404.
	Monitor http.Handler
}

// Options tune the API; zero values take the documented defaults.
type Options struct {
	// SessionTTL is a new session's lifetime until first use (default 24h).
	SessionTTL time.Duration
	// QRWait bounds how long a create waits for the worker's first QR code
	// or pairing code; 0 answers at once with qrCode null.
	QRWait time.Duration
	// RequestTimeout bounds each request's work against Postgres and Redis
	// (default 10s), give or take a tenth of it, at most 100 ms: requests
	// that start together share one deadline (see deadlines).
	RequestTimeout time.Duration
	// Heartbeat is the interval of the event stream's comment lines that
	// keep proxies from closing an idle stream (default 15s).
	Heartbeat time.Duration
	// RetryHint is the reconnect delay the event stream suggests to
	// EventSource clients (default 3s).
	RetryHint time.Duration
	// Limits are the request rate limits (with Deps.Limiter).
	Limits Limits
	// MetricsToken, when set, is the bearer token /metrics requires
	// (METRICS_TOKEN): the metrics say how many sessions exist and how
	// busy the queues are, which is no business of the public.
	MetricsToken string
	// MetricsApart leaves /metrics out of New (404 there): NewMetricsApp
	// serves it on its own, internal, address (API_METRICS_ADDR).
	MetricsApart bool
	// MonitorUser and MonitorPassword guard /monitor.
	MonitorUser     string
	MonitorPassword string
	// MonitorWritable lets asynqmon's actions through (pause a queue,
	// delete, cancel or run tasks; MONITOR_READONLY=false). The zero value
	// is read-only: every request but GET and HEAD is refused with 405.
	MonitorWritable bool
	// CleanupWaitHosted is how long the admin cleanup waits for workers to
	// stop expired sessions they host (default 10s).
	CleanupWaitHosted time.Duration
	// MessageRetention is how long the admin cleanup keeps messages of
	// ended sessions (default 7 days).
	MessageRetention time.Duration
	// Webhooks configure the webhook endpoints' routes.
	Webhooks WebhookOptions
	// Static, when set, is served at / without authentication (the
	// frontend page); API routes take precedence.
	Static fs.FS
	// StaticHeaders are set on every response from Static (the page's
	// Content-Security-Policy and friends, see web.Headers).
	StaticHeaders map[string]string
	// BaseContext is the server's lifetime: when it is done, every open
	// event stream ends, so a graceful shutdown is not held up by them.
	// Cancel it before shutting the app down. Default: never done.
	BaseContext context.Context
	// Now is the clock for session ids (default time.Now).
	Now func() time.Time
}

func (o *Options) defaults() {
	if o.SessionTTL <= 0 {
		o.SessionTTL = 24 * time.Hour
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 10 * time.Second
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Second
	}
	if o.RetryHint <= 0 {
		o.RetryHint = 3 * time.Second
	}
	if o.CleanupWaitHosted <= 0 {
		o.CleanupWaitHosted = 10 * time.Second
	}
	if o.Webhooks.MaxEndpoints <= 0 {
		o.Webhooks.MaxEndpoints = 10
	}
	if o.Webhooks.RotationOverlap <= 0 {
		o.Webhooks.RotationOverlap = 24 * time.Hour
	}
	if o.Webhooks.Sealer == nil {
		o.Webhooks.Sealer, _ = webhook.NewSealer("")
	}
	if o.BaseContext == nil {
		o.BaseContext = context.Background()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// server holds what the handlers share.
type server struct {
	deps    Deps
	opts    Options
	log     *slog.Logger
	metrics *apimetrics.Metrics
	// deadlines bounds each request's work against the stores.
	deadlines *deadlines
}

// New returns the fiber app serving the whole API.
func New(deps Deps, opts Options) *fiber.App {
	s := newServer(deps, opts)
	app := s.newApp("wasessions-api")
	s.routes(app)
	return app
}

func newServer(deps Deps, opts Options) *server {
	opts.defaults()
	s := &server{deps: deps, opts: opts, log: deps.Log, metrics: deps.Metrics, deadlines: newDeadlines(opts.RequestTimeout)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(deps)
	}
	return s
}

// NewMetrics builds the API's instruments on deps' stores. New builds its
// own when Deps.Metrics is nil; build them here to share them between New
// and NewMetricsApp.
func NewMetrics(deps Deps) *apimetrics.Metrics {
	var src apimetrics.Sources
	if deps.Store != nil {
		src.Sessions = deps.Store
	}
	if deps.Enqueuer != nil {
		src.Inspector = deps.Enqueuer.Inspector()
	}
	if deps.Redis != nil {
		src.RedisPing = func(ctx context.Context) error { return deps.Redis.Ping(ctx).Err() }
	}
	return apimetrics.New(src)
}

// newApp is a fiber app with the API's limits and error handler.
func (s *server) newApp(name string) *fiber.App {
	return fiber.New(fiber.Config{
		AppName:               name,
		BodyLimit:             BodyLimit,
		DisableStartupMessage: true,
		ErrorHandler:          s.errorHandler,
		// ReadTimeout also bounds idle keep-alive reads, which lets a
		// graceful shutdown finish. No WriteTimeout: it would cut event
		// streams, whose end is driven by BaseContext and write errors.
		ReadTimeout: 30 * time.Second,
		IdleTimeout: 90 * time.Second,
	})
}

// errorHandler is fiber's last resort: errors that did not pass through
// the observe middleware (e.g. fasthttp's 413 for a body over the limit,
// raised before routing).
func (s *server) errorHandler(c *fiber.Ctx, err error) error {
	ae := writeError(c, err)
	if c.Locals(observedKey) == nil {
		method := strings.Clone(c.Method())
		s.metrics.ObserveHTTP(method, "unmatched", ae.Status, 0)
		attrs := []any{"method", method, "route", "unmatched", "path", c.Path(), "status", ae.Status, "error_code", ae.Code}
		if ae.Status >= 500 && ae.Err != nil {
			attrs = append(attrs, "error", ae.Err.Error())
		}
		s.log.Log(c.UserContext(), levelFor(ae.Status, "unmatched"), "request", attrs...)
	}
	return nil
}
