package httpapi

import (
	"net/http"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"

	"wasessions/internal/apimetrics"
)

// NewMonitor builds asynqmon on conn (redisconn.AsynqConnOpt: the
// process's Redis options, credentials and TLS included), rooted at
// /monitor. It opens its own Redis connections (asynqmon takes no client);
// Close it on shutdown. writable turns off asynqmon's own read-only mode,
// which also hides the action buttons in its UI; monitorRoutes refuses
// actions by itself as well, so the API's answer does not depend on
// asynqmon's.
func NewMonitor(conn asynq.RedisConnOpt, writable bool) *asynqmon.HTTPHandler {
	return asynqmon.New(asynqmon.Options{RootPath: "/monitor", RedisConnOpt: conn, ReadOnly: !writable})
}

// NewMonitorApp serves only the monitor (deps.Monitor, behind the same basic
// auth and read-only rule as in New), for MONITOR_ADDR: an operator UI that
// can pause queues belongs on an internal address, not on the port the
// users' browsers reach. Give New the same Options without deps.Monitor,
// so the public port answers 404 at /monitor.
func NewMonitorApp(deps Deps, opts Options) *fiber.App {
	if deps.Metrics == nil {
		deps.Metrics = apimetrics.New(apimetrics.Sources{})
	}
	s := newServer(deps, opts)
	app := s.newApp("wasessions-monitor")
	app.Use(s.observe, s.recoverPanic)
	s.monitorRoutes(app)
	return app
}

// monitorRoutes mounts asynqmon at /monitor behind basic auth, read-only
// unless MonitorWritable; without a monitor or a password, /monitor is a
// 404 like any unknown path.
func (s *server) monitorRoutes(app *fiber.App) {
	if s.deps.Monitor == nil || s.opts.MonitorPassword == "" {
		app.All("/monitor", monitorOff)
		app.All("/monitor/*", monitorOff)
		return
	}
	handlers := []any{"/monitor", basicAuth(s.opts.MonitorUser, s.opts.MonitorPassword)}
	if !s.opts.MonitorWritable {
		handlers = append(handlers, monitorReadOnly)
	}
	handlers = append(handlers, adaptor.HTTPHandler(s.deps.Monitor))
	app.Use(handlers...)
}

func monitorOff(*fiber.Ctx) error {
	return fail(http.StatusNotFound, codeNotFound, "no such route")
}

// monitorReadOnly lets only reads through: every asynqmon action (pause,
// resume, delete, cancel, run, archive) is a POST or DELETE.
func monitorReadOnly(c *fiber.Ctx) error {
	if c.Method() == fiber.MethodGet || c.Method() == fiber.MethodHead {
		return c.Next()
	}
	return &apiError{Status: http.StatusMethodNotAllowed, Code: "monitor_read_only",
		Message: "the monitor is read-only (MONITOR_READONLY=false allows its actions)",
		Header:  map[string]string{fiber.HeaderAllow: "GET, HEAD"}}
}
