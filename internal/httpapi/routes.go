package httpapi

import (
	"net/http"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/filesystem"

	"wasessions/docs"
)

// routes is the API's whole surface; docs/openapi.yaml describes each one.
func (s *server) routes(app *fiber.App) {
	app.Use(s.observe, s.recoverPanic, refuseEncodedBodies)

	// Unauthenticated: probes, metrics, the contract, the monitor (its own
	// basic auth; its UI calls its API without tokens).
	app.Get("/healthz", s.healthz)
	app.Get("/readyz", s.readyz)
	if !s.opts.MetricsApart {
		s.metricsRoutes(app)
	}
	app.Get("/openapi.yaml", serveSpec)
	s.monitorRoutes(app)

	// Bearer token on each route, not on a prefix: see authenticate.
	wa := "/api/integrations/whatsapp"
	// noStore: these answers carry QR or pairing codes (events sets it
	// itself).
	app.Post(wa+"/session", noStore, s.authenticate, s.createSession)
	app.Get(wa+"/qr", noStore, s.authenticate, s.qr)
	app.Get(statusRoute, noStore, s.authenticate, s.status)
	app.Post(wa+"/disconnect", noStore, s.authenticate, s.perUser(limitDisconnect, s.opts.Limits.Disconnect), s.disconnect)
	app.Get(wa+"/events", s.authenticate, s.events)
	app.Post(wa+"/messages", s.authenticate, s.perUser(limitSend, s.opts.Limits.Send), s.sendMessage)
	app.Get(wa+"/messages", s.authenticate, s.listMessages)
	app.Get(wa+"/messages/:messageId", s.authenticate, s.getMessage)
	hooks := "/api/integrations/webhooks"
	app.Post(hooks, s.authenticate, s.createWebhook)
	app.Get(hooks, s.authenticate, s.listWebhooks)
	app.Get(hooks+"/:id", s.authenticate, s.getWebhook)
	app.Patch(hooks+"/:id", s.authenticate, s.updateWebhook)
	app.Delete(hooks+"/:id", s.authenticate, s.deleteWebhook)
	app.Post(hooks+"/:id/rotate-secret", noStore, s.authenticate, s.rotateWebhookSecret)
	app.Get(hooks+"/:id/deliveries", s.authenticate, s.webhookDeliveries)
	app.Post(hooks+"/:id/events/:eventId/replay", s.authenticate, s.replayWebhookEvent)
	app.Get("/api/integrations/sessions/stats", s.authenticate, s.stats)
	app.Post("/api/integrations/sessions/cleanup", s.authenticate, requireAdmin, s.cleanup)
	admin := "/api/integrations/admin"
	app.Get(admin+"/sessions", s.authenticate, requireAdmin, s.adminSessions)
	app.Get(admin+"/sessions/:sessionId", s.authenticate, requireAdmin, s.adminSessionDetail)
	app.Post(admin+"/sessions/:sessionId/disconnect", s.authenticate, requireAdmin, s.adminDisconnect)
	app.Get(admin+"/workers", s.authenticate, requireAdmin, s.adminWorkers)
	app.Get(admin+"/events", s.authenticate, requireAdmin, s.adminEvents)
	app.Put(admin+"/sessions/:sessionId/proxy", s.authenticate, requireAdmin, s.setSessionProxy)

	// Last: the frontend's static files, reached only by paths no route
	// above matched.
	if s.opts.Static != nil {
		app.Use("/", s.staticHeaders, filesystem.New(filesystem.Config{
			Root:  http.FS(s.opts.Static),
			Index: "index.html",
			Next: func(c *fiber.Ctx) bool {
				p := c.Path()
				return strings.HasPrefix(p, "/api/") || p == "/api" || strings.HasPrefix(p, "/monitor")
			},
		}))
	}
}

// statusRoute is GET /status's path: the route clients poll.
const statusRoute = "/api/integrations/whatsapp/status"

// noStore forbids any cache (browser, proxy) to keep the answer: a QR or
// pairing code kept in a shared or on-disk cache could be scanned or typed
// by someone else while it is valid, and link their phone to the user.
func noStore(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Next()
}

// staticHeaders sets Options.StaticHeaders on the static files' responses.
func (s *server) staticHeaders(c *fiber.Ctx) error {
	for k, v := range s.opts.StaticHeaders {
		c.Set(k, v)
	}
	return c.Next()
}

func serveSpec(c *fiber.Ctx) error {
	c.Set(fiber.HeaderContentType, "application/yaml")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	return c.Send(docs.OpenAPI)
}
