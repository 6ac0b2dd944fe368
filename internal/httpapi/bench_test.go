package httpapi_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"wasessions/internal/qrpng"
	"wasessions/internal/store"
)

// benchEnv is an API with one user whose session row exists, for
// measuring GET /status: JWT verification, one Postgres read, JSON. It logs
// as production does (JSON lines at info, one per request) into a file, not
// into the tests' in-memory buffer.
func benchEnv(b testing.TB) (*env, string) {
	f, err := os.CreateTemp(b.TempDir(), "api-*.log")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	log := slog.New(slog.NewJSONHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo}))
	e := newEnv(b, func(s *setup) { s.log = log })
	user := newUser()
	tok := e.token(user, false)
	r := e.do(req{method: "POST", path: sessionPath, token: tok})
	if r.Status != 201 {
		b.Fatalf("create: %d %s", r.Status, r.Body)
	}
	// The session shows a QR code, as a worker writes it while the user
	// scans (when clients poll the status most): the row then holds the
	// PNG data URL.
	var sessionID string
	r.data(b, &struct {
		SessionID *string `json:"sessionId"`
	}{&sessionID})
	ctx := context.Background()
	_, fence, err := e.store.Claim(ctx, sessionID, "bench-worker", time.Hour, store.ClaimToHost)
	if err != nil {
		b.Fatal(err)
	}
	raw := "2@" + strings.Repeat("Qk", 120)
	png, err := qrpng.DataURL(raw)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := e.store.SetQR(ctx, fence, png, raw); err != nil {
		b.Fatal(err)
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

// BenchmarkBareFiber is the floor GET /status is held to: a fiber handler
// that verifies the same JWT and runs one indexed SELECT of a small row
// (bareApp), through the same fasthttp handler path.
func BenchmarkBareFiber(b *testing.B) {
	e, tok := benchEnv(b)
	h := bareApp(e).Handler()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var ctx fasthttp.RequestCtx
		for pb.Next() {
			ctx.Request.Reset()
			ctx.Response.Reset()
			ctx.Request.Header.SetMethod("GET")
			ctx.Request.SetRequestURI("/bare")
			ctx.Request.Header.Set("Authorization", "Bearer "+tok)
			h(&ctx)
			if ctx.Response.StatusCode() != 200 {
				b.Fatalf("status %d", ctx.Response.StatusCode())
			}
		}
	})
}

// bareApp is the least a status route can do: verify the bearer token
// with the API's own verifier, read one small row by an indexed column
// (the caller's session id and status, on idx_whatsapp_sessions_user_id)
// through the same pool, and answer it as JSON. No middleware, no
// metrics, no log line.
func bareApp(e *env) *fiber.App {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	verifier := e.deps.Verifier
	pool := e.store.Pool()
	app.Get("/bare", func(c *fiber.Ctx) error {
		id, err := verifier.VerifyHeader(c.Get(fiber.HeaderAuthorization))
		if err != nil {
			return c.SendStatus(fiber.StatusUnauthorized)
		}
		var sessionID, status string
		if err := pool.QueryRow(c.UserContext(), `SELECT session_id, status FROM whatsapp_sessions
			WHERE user_id = $1 LIMIT 1`, id.UserID).Scan(&sessionID, &status); err != nil {
			return err
		}
		return c.JSON(fiber.Map{"success": true, "data": fiber.Map{"sessionId": sessionID, "status": status}})
	})
	return app
}
