package httpapi_test

import (
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// benchEnv is an API with one user whose session row exists, for
// measuring GET /status: JWT verification, one Postgres read, JSON.
func benchEnv(b testing.TB) (*env, string) {
	e := newEnv(b)
	user := newUser()
	tok := e.token(user, false)
	r := e.do(req{method: "POST", path: sessionPath, token: tok})
	if r.Status != 201 {
		b.Fatalf("create: %d %s", r.Status, r.Body)
	}
	return e, tok
}

// BenchmarkStatus runs GET /api/integrations/whatsapp/status through the
// app's fasthttp handler (no network), against real Postgres.
//
//	go test -run '^$' -bench Status -benchtime 5s ./internal/httpapi/
func BenchmarkStatus(b *testing.B) {
	e, tok := benchEnv(b)
	h := e.app.Handler()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var ctx fasthttp.RequestCtx
		for pb.Next() {
			ctx.Request.Reset()
			ctx.Response.Reset()
			ctx.Request.Header.SetMethod("GET")
			ctx.Request.SetRequestURI(statusPath)
			ctx.Request.Header.Set("Authorization", "Bearer "+tok)
			h(&ctx)
			if ctx.Response.StatusCode() != 200 {
				b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
			}
		}
	})
}

// BenchmarkBareFiber is the floor: a fiber handler answering a constant
// JSON body through the same fasthttp handler path.
func BenchmarkBareFiber(b *testing.B) {
	h := bareApp().Handler()
	b.RunParallel(func(pb *testing.PB) {
		var ctx fasthttp.RequestCtx
		for pb.Next() {
			ctx.Request.Reset()
			ctx.Response.Reset()
			ctx.Request.Header.SetMethod("GET")
			ctx.Request.SetRequestURI("/bare")
			h(&ctx)
			if ctx.Response.StatusCode() != 200 {
				b.Fatalf("status %d", ctx.Response.StatusCode())
			}
		}
	})
}

func bareApp() *fiber.App {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	body := fiber.Map{"success": true, "data": fiber.Map{"status": "connected", "isConnected": true}, "message": "ok"}
	app.Get("/bare", func(c *fiber.Ctx) error { return c.JSON(body) })
	return app
}
