package httpapi_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5/pgxpool"
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
	seedOthers(b, e, 10_000)
	return e, tok
}

// seedOthers gives the table the sessions of n other users, as a
// deployment has (each an ended session and, for most, a live one), and
// statistics, so that Postgres plans both the status read and the bare
// handler's SELECT as it would there: index scans, not a read of the
// whole (otherwise one-row) table.
func seedOthers(b testing.TB, e *env, n int) {
	ctx := context.Background()
	for _, sql := range []string{
		`INSERT INTO users (id) SELECT gen_random_uuid() FROM generate_series(1, $1)`,
		`INSERT INTO whatsapp_sessions (user_id, session_id, status, status_reason, desired_state, created_at)
		 SELECT id, 'whatsapp_' || id || '_1', 'disconnected', 'user_request', 'gone', now() - interval '2 days'
		 FROM users WHERE NOT EXISTS (SELECT FROM whatsapp_sessions s WHERE s.user_id = users.id)`,
		`INSERT INTO whatsapp_sessions (user_id, session_id, status, desired_state, is_connected, is_authenticated, phone_number)
		 SELECT user_id, 'whatsapp_' || user_id || '_2', 'connected', 'linked', true, true, '4915112345678'
		 FROM whatsapp_sessions WHERE status = 'disconnected' AND user_id::text > '3'`,
		`ANALYZE`,
	} {
		var args []any
		if strings.Contains(sql, "$1") {
			args = append(args, n)
		}
		if _, err := e.store.Pool().Exec(ctx, sql, args...); err != nil {
			b.Fatalf("seed: %v", err)
		}
	}
}

// BenchmarkStatus runs GET /api/integrations/whatsapp/status through the
// app's fasthttp handler (no network), against real Postgres.
//
//	go test -run '^$' -bench Status -benchtime 5s ./internal/httpapi/
func BenchmarkStatus(b *testing.B) {
	e, tok := benchEnv(b)
	benchHandler(b, e, e.app.Handler(), statusPath, tok)
}

// BenchmarkBareFiber is the floor GET /status is held to: a fiber handler
// that verifies the same JWT and runs one indexed SELECT of a small row
// (bareApp), through the same fasthttp handler path.
func BenchmarkBareFiber(b *testing.B) {
	e, tok := benchEnv(b)
	benchHandler(b, e, bareApp(e).Handler(), "/bare", tok)
}

// benchHandler calls h with GET path and the bearer token from two
// goroutines (RunParallel at GOMAXPROCS 2) and reports, next to ns/op,
// cpu-ns/op: the CPU time (user and system, every thread of the process)
// per request, and pg-cpu-ns/op: the CPU time of the Postgres backends
// serving e's database per request. On a shared machine wall time per
// request mostly says how busy the others are; the CPU a request costs is
// what the code decides.
func benchHandler(b *testing.B, e *env, h fasthttp.RequestHandler, path, tok string) {
	b.ReportAllocs()
	pool := e.store.Pool()
	pg0 := backendCPU(b, pool, nil)
	cpu0 := processCPU(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var ctx fasthttp.RequestCtx
		for pb.Next() {
			ctx.Request.Reset()
			ctx.Response.Reset()
			ctx.Request.Header.SetMethod("GET")
			ctx.Request.SetRequestURI(path)
			ctx.Request.Header.Set("Authorization", "Bearer "+tok)
			h(&ctx)
			if ctx.Response.StatusCode() != 200 {
				b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(backendCPU(b, pool, pg0).total())/float64(b.N), "pg-cpu-ns/op")
}

// processCPU is the CPU time this process has used so far.
func processCPU(b testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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

// pgCPU is the CPU time each Postgres backend (by pid) has used.
type pgCPU map[int]time.Duration

func (c pgCPU) total() time.Duration {
	var d time.Duration
	for _, v := range c {
		d += v
	}
	return d
}

// backendCPU reads, from /proc, the CPU time of the backends serving the
// test's database (Postgres runs on this machine: loopback only). With
// since, it is what each used after since was read (a backend the pool
// opened in between counts from its start).
func backendCPU(t testing.TB, pool *pgxpool.Pool, since pgCPU) pgCPU {
	rows, err := pool.Query(context.Background(),
		`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'`)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	now := pgCPU{}
	for _, pid := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // the backend ended in between
		}
		// Fields after the command's closing parenthesis: utime and stime
		// are the 12th and 13th, in clock ticks.
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		now[pid] = time.Duration(ut+st) * (time.Second / clockTicks)
	}
	if since == nil {
		return now
	}
	used := pgCPU{}
	for pid, v := range now {
		used[pid] = v - since[pid]
	}
	return used
}

// clockTicks is USER_HZ, the unit of /proc's CPU times (100 on Linux).
const clockTicks = 100
