// Command api serves the wasessions HTTP API (internal/httpapi): it reads
// its configuration from the environment, brings the database schema up to
// date, and serves until SIGINT or SIGTERM, then shuts down gracefully.
//
//	api                                      serve
//	api token --user UUID [--admin] [--ttl 1h]  print a signed bearer token
//
// Exit codes: 0 on a clean stop, 2 on invalid configuration or usage, 1 on
// any other failure (e.g. Postgres unreachable at start for longer than the
// migration retry window).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"wasessions/internal/auth"
	"wasessions/internal/cli"
	"wasessions/internal/config"
	"wasessions/internal/events"
	"wasessions/internal/httpapi"
	"wasessions/internal/logging"
	"wasessions/internal/migrate"
	"wasessions/internal/netguard"
	"wasessions/internal/queue"
	"wasessions/internal/ratelimit"
	"wasessions/internal/redisconn"
	"wasessions/internal/store"
	"wasessions/internal/web"
	"wasessions/internal/webhook"
)

func main() { cli.Main("api", run) }

// Timings of start and stop; variables so tests can shorten them.
var (
	// migrateRetryWindow bounds how long start waits for Postgres.
	migrateRetryWindow = 2 * time.Minute
	// shutdownTimeout bounds the graceful shutdown of open requests.
	shutdownTimeout = 15 * time.Second
)

const usage = `usage: api                                        serve the HTTP API until SIGINT or SIGTERM
       api token --user UUID [--admin] [--ttl 1h]  print a signed bearer token

Configured by environment variables (see README.md): JWT_SECRET, DATABASE_URL
or DB_*, REDIS_URL, HTTP_ADDR, ...`

// run is the whole program, with its environment passed in.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 1 && args[1] == "token" {
		return runToken(args[2:], getenv, stdout, stderr)
	}
	fs := cli.FlagSet("api", usage, stderr)
	if err := cli.Parse(fs, args[1:], false); err != nil {
		return err
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	log := logging.New(stdout, cfg.LogLevel, string(config.API))
	return serve(ctx, cfg, log)
}

// loadConfig reads and validates the API's configuration; any problem is
// a usage error naming the variable.
func loadConfig(getenv func(string) string) (config.Config, error) {
	cfg, err := config.LoadFor(getenv, config.API)
	return cfg, cli.Usage(err)
}

func serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	pool, db, err := migrate.Open(ctx, cfg.PostgresURL(), cfg.DBMaxConns, log, migrateRetryWindow)
	if err != nil {
		return cli.UnlessStopped(ctx, err)
	}
	defer pool.Close()
	db.Close() // only the migrations use database/sql

	redisConn, err := redisconn.New(cfg.Redis())
	if err != nil {
		return cli.Usagef("REDIS_URL / REDIS_SENTINEL_*: %v", err)
	}
	rdb := redisConn.Client()
	defer rdb.Close()

	verifier, err := auth.NewVerifier(auth.Config{Secret: []byte(cfg.JWTSecret), Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience,
		Leeway: 30 * time.Second, MaxTTL: cfg.JWTMaxTTL})
	if err != nil {
		return cli.Usagef("JWT_SECRET: %v", err)
	}
	bus := events.NewBus(rdb)
	// One Redis subscription for the whole process, whatever the number
	// of event streams.
	hub := events.NewHub(bus, events.HubOptions{PerUser: cfg.StreamsPerUser, Total: cfg.StreamsMax, Log: log})
	defer hub.Close()
	deps := httpapi.Deps{
		Store:    store.New(pool),
		Enqueuer: queue.New(rdb),
		Bus:      bus,
		Hub:      hub,
		Redis:    rdb,
		Limiter:  ratelimit.New(rdb),
		Verifier: verifier,
		Log:      log,
	}
	var monitor http.Handler
	if cfg.MonitorPassword != "" {
		mon := httpapi.NewMonitor(redisConn.AsynqConnOpt(), !cfg.MonitorReadOnly)
		defer mon.Close()
		monitor = mon
	}
	// Streams live until shutdown begins, not until ctx (a signal) ends:
	// the order below is signal, end streams, drain requests.
	streams, endStreams := context.WithCancel(context.Background())
	defer endStreams()
	opts := httpapi.Options{
		SessionTTL:       cfg.SessionTTL,
		QRWait:           cfg.QRWait,
		MessageRetention: cfg.MessageRetention,
		Limits: httpapi.Limits{
			Create:       cfg.RateLimitCreate,
			Disconnect:   cfg.RateLimitDisconnect,
			PairingPhone: cfg.RateLimitPairingPhone,
			Send:         cfg.RateLimitSend,
		},
		MonitorUser:     cfg.MonitorUser,
		MonitorPassword: cfg.MonitorPassword,
		MonitorWritable: !cfg.MonitorReadOnly,
		BaseContext:     streams,
		Static:          web.FS(), // the session page at /
		StaticHeaders:   web.Headers(),
	}
	if opts.Webhooks, err = webhookOptions(cfg); err != nil {
		return cli.Usage(err)
	}
	// The monitor is served on HTTP_ADDR, or only on MONITOR_ADDR.
	apps := []listener{{name: "HTTP_ADDR", addr: cfg.HTTPAddr}}
	if cfg.MonitorAddr == "" {
		deps.Monitor = monitor
	} else if monitor != nil {
		apps = append(apps, listener{name: "MONITOR_ADDR", addr: cfg.MonitorAddr,
			app: httpapi.NewMonitorApp(httpapi.Deps{Monitor: monitor, Log: log}, opts)})
	}
	// /metrics is served on HTTP_ADDR, or only on API_METRICS_ADDR; both
	// apps report into one registry.
	deps.Metrics = httpapi.NewMetrics(deps)
	opts.MetricsToken = cfg.MetricsToken
	if cfg.APIMetricsAddr != "" {
		opts.MetricsApart = true
		apps = append(apps, listener{name: "API_METRICS_ADDR", addr: cfg.APIMetricsAddr,
			app: httpapi.NewMetricsApp(deps, opts)})
	}
	apps[0].app = httpapi.New(deps, opts)

	for i := range apps {
		ln, err := net.Listen("tcp", apps[i].addr)
		if err != nil {
			for _, a := range apps[:i] {
				a.ln.Close()
			}
			return fmt.Errorf("listen on %s %s: %w", apps[i].name, apps[i].addr, err)
		}
		apps[i].ln = ln
	}
	warnWeakSettings(log, cfg)
	log.Info("api listening", "addr", apps[0].ln.Addr().String(), "monitor", monitor != nil,
		"monitor_addr", listenerAddr(apps, "MONITOR_ADDR"), "monitor_read_only", cfg.MonitorReadOnly,
		"metrics_addr", listenerAddr(apps, "API_METRICS_ADDR"), "metrics_token", cfg.MetricsToken != "",
		"qr_wait", cfg.QRWait.String(), "session_ttl", cfg.SessionTTL.String(),
		"rate_limit_create", cfg.RateLimitCreate.String(), "rate_limit_disconnect", cfg.RateLimitDisconnect.String(),
		"rate_limit_pairing_phone", cfg.RateLimitPairingPhone.String(), "rate_limit_send", cfg.RateLimitSend.String(),
		"jwt_issuer", cfg.JWTIssuer, "jwt_audience", cfg.JWTAudience)
	served := make(chan error, len(apps))
	for _, a := range apps {
		go func() { served <- a.app.Listener(a.ln) }()
	}

	var serveErr error
	running := len(apps)
	select {
	case err := <-served:
		running--
		serveErr = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("api shutting down")
	endStreams()
	for _, a := range apps {
		if err := a.app.ShutdownWithTimeout(shutdownTimeout); err != nil {
			log.Warn("api shutdown: requests still open at the deadline", "listener", a.name, "error", err)
		}
	}
	for ; running > 0; running-- {
		<-served
	}
	if serveErr != nil {
		return serveErr
	}
	log.Info("api stopped")
	return nil
}

// listener is one of the API's HTTP servers: the API itself, and the
// monitor when MONITOR_ADDR gives it an address of its own.
type listener struct {
	name, addr string
	app        *fiber.App
	ln         net.Listener
}

// listenerAddr is the address of the listener named name (MONITOR_ADDR,
// API_METRICS_ADDR) for the start line, or "" when there is none.
func listenerAddr(apps []listener, name string) string {
	for _, a := range apps {
		if a.name == name {
			return a.ln.Addr().String()
		}
	}
	return ""
}

// warnWeakSettings logs, at start, the settings that work but leave a
// door open.
func warnWeakSettings(log *slog.Logger, cfg config.Config) {
	if cfg.JWTAudience == "" {
		// Any token signed with the same secret, for any other service
		// sharing it, would be accepted here.
		log.Warn("JWT_AUDIENCE is unset: tokens are accepted whatever their aud; set it to the audience your issuer puts in tokens meant for this API")
	}
	if cfg.APIMetricsAddr == "" && cfg.MetricsToken == "" {
		log.Warn("/metrics is public on HTTP_ADDR: set API_METRICS_ADDR (an internal address) or METRICS_TOKEN")
	}
}

// runToken is `api token`: it prints a token signed with JWT_SECRET (and
// JWT_ISSUER, JWT_AUDIENCE when set) for an operator or a developer.
func runToken(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := cli.FlagSet("api token", `usage: api token --user UUID [--admin] [--ttl 1h] [--env-file .run/env]

Prints a bearer token signed with JWT_SECRET (and JWT_ISSUER, JWT_AUDIENCE).
Settings missing from the environment are read from --env-file, where
make run and make demo keep the secrets they generate.`, stderr)
	user := fs.String("user", "", "the user's UUID (the token's sub); required")
	admin := fs.Bool("admin", false, `add role "admin" (global stats, cleanup)`)
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	envFile := fs.String("env-file", defaultEnvFile, "`file` of KEY=VALUE lines read for the settings the environment lacks (ignored when the default is missing)")
	if err := cli.Parse(fs, args, false); err != nil {
		return fmt.Errorf("token: %w", err)
	}
	fileEnv, err := readEnvFile(*envFile, *envFile != defaultEnvFile)
	if err != nil {
		return cli.Usagef("token: --env-file: %w", err)
	}
	if getenv("JWT_SECRET") == "" && fileEnv["JWT_SECRET"] == "" {
		return cli.Usagef("token: JWT_SECRET is unset and not in %s (make run and make demo write it there: run this from the repository root, or pass --env-file, or set JWT_SECRET)", *envFile)
	}
	getenv = withFallback(getenv, fileEnv)
	if *user == "" {
		return cli.Usagef("token: --user UUID is required")
	}
	if *ttl <= 0 {
		return cli.Usagef("token: --ttl must be positive, got %s", *ttl)
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	if *ttl > cfg.JWTMaxTTL {
		return cli.Usagef("token: --ttl %s is longer than JWT_MAX_TTL (%s): the API would refuse the token", *ttl, cfg.JWTMaxTTL)
	}
	signer, err := auth.NewSigner(auth.Config{Secret: []byte(cfg.JWTSecret), Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience})
	if err != nil {
		return cli.Usagef("JWT_SECRET: %v", err)
	}
	tok, err := signer.Sign(*user, *admin, *ttl)
	if err != nil {
		return cli.Usagef("token: --user: %v", err)
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

// defaultEnvFile is where scripts/lib.sh keeps the secrets it generates for
// make run and make demo.
const defaultEnvFile = ".run/env"

// readEnvFile reads KEY=VALUE lines (blank lines and # comments skipped, no
// quoting), the format scripts/lib.sh writes. A missing file is an error
// only when required.
func readEnvFile(path string, required bool) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !required {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s: %q is not KEY=VALUE", path, line)
		}
		vars[k] = v
	}
	return vars, nil
}

// withFallback reads getenv, and vars for what getenv leaves empty: the
// environment wins, as in scripts/lib.sh.
func withFallback(getenv func(string) string, vars map[string]string) func(string) string {
	return func(k string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return vars[k]
	}
}

// webhookOptions are the webhook routes' settings: which URLs may be
// registered, how secrets are stored, how many endpoints a user may have.
func webhookOptions(cfg config.Config) (httpapi.WebhookOptions, error) {
	sealer, err := webhook.NewSealer(cfg.WebhookSecretKey)
	if err != nil {
		return httpapi.WebhookOptions{}, err
	}
	return httpapi.WebhookOptions{
		Guard:        netguard.Guard{AllowHTTP: cfg.WebhookAllowHTTP, AllowPrivate: cfg.WebhookAllowPrivate},
		Sealer:       sealer,
		MaxEndpoints: cfg.WebhookMaxEndpoints,
	}, nil
}
