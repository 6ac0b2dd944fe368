// Package config reads the service's settings from the environment, once, at
// start. All three programs share one Config so a setting means the same
// thing everywhere; Validate checks what a given program needs and a bad
// value stops the program with a message that names the variable (exit code
// 2, see cmd/*), instead of failing later in some unrelated place.
package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/robfig/cron/v3"

	"wasessions/internal/ratelimit"
	"wasessions/internal/redisconn"
	"wasessions/internal/wa"
)

// Config is every setting of api, worker and scheduler.
type Config struct {
	// HTTPAddr is where the API listens.
	HTTPAddr string `env:"HTTP_ADDR" envDefault:":8080"`

	// DatabaseURL, when set, wins over the DB_* variables (kept for
	// compatibility, docs/ARCHITECTURE.md).
	DatabaseURL string `env:"DATABASE_URL"`
	// DBHost may list several hosts, comma-separated (a primary and its
	// standbys, all on DBPort): the programs then connect to whichever
	// accepts writes (target_session_attrs=read-write) and follow a
	// failover.
	DBHost     string `env:"DB_HOST" envDefault:"127.0.0.1"`
	DBPort     int    `env:"DB_PORT" envDefault:"5432"`
	DBName     string `env:"DB_NAME" envDefault:"wasessions"`
	DBUser     string `env:"DB_USER" envDefault:"postgres"`
	DBPassword string `env:"DB_PASSWORD"`
	// DBSSLMode is libpq's sslmode for the DB_* connection. The default,
	// prefer, works with a local Postgres with or without TLS; anything that
	// crosses a network should use require, or verify-full with
	// DBSSLRootCert: the device keys travel on this connection.
	DBSSLMode string `env:"DB_SSLMODE" envDefault:"prefer"`
	// DBSSLRootCert is the CA certificate file that verify-ca and
	// verify-full check the server's certificate against.
	DBSSLRootCert string `env:"DB_SSLROOTCERT"`
	// DBMaxConns caps each process's Postgres pool; a worker shares it
	// between its own queries and whatsmeow's key store.
	DBMaxConns int `env:"DB_MAX_CONNS" envDefault:"10"`

	// RedisURL is the one Redis that asynq and the session events share.
	RedisURL string `env:"REDIS_URL" envDefault:"redis://127.0.0.1:6379/0"`
	// RedisTLSCAFile, a PEM file, is the CA a rediss:// server's
	// certificate must chain to (the system's roots when unset).
	RedisTLSCAFile string `env:"REDIS_TLS_CA_FILE"`
	// RedisSentinelAddrs (comma-separated host:port), when set, reach Redis
	// through Sentinel: the primary is whichever server these sentinels
	// name for RedisSentinelMaster, and every client follows a failover.
	// REDIS_URL then gives only the primary's credentials, database and
	// transport (its host is not dialled).
	RedisSentinelAddrs []string `env:"REDIS_SENTINEL_ADDRS" envSeparator:","`
	// RedisSentinelMaster is the name the sentinels monitor the primary
	// under.
	RedisSentinelMaster string `env:"REDIS_SENTINEL_MASTER"`
	// RedisSentinelUsername and RedisSentinelPassword authenticate to the
	// sentinels themselves (their requirepass, or an ACL user).
	RedisSentinelUsername string `env:"REDIS_SENTINEL_USERNAME"`
	RedisSentinelPassword string `env:"REDIS_SENTINEL_PASSWORD"`

	// JWTSecret signs and verifies HS256 tokens; the API refuses to start
	// without it.
	JWTSecret   string `env:"JWT_SECRET"`
	JWTIssuer   string `env:"JWT_ISSUER"`
	JWTAudience string `env:"JWT_AUDIENCE"`
	// JWTMaxTTL is the longest lifetime (exp - iat) of a token the API
	// accepts; a token without iat may not outlive now + JWTMaxTTL.
	JWTMaxTTL time.Duration `env:"JWT_MAX_TTL" envDefault:"24h"`

	// StreamsPerUser and StreamsMax cap the event streams one API process
	// holds open, per user and in all (429 above either): each one is a
	// connection and a goroutine, and before the caps one token could
	// open them without end.
	StreamsPerUser int `env:"STREAMS_PER_USER" envDefault:"5"`
	StreamsMax     int `env:"STREAMS_MAX" envDefault:"2000"`

	// SessionTTL is how long an unused session lives; a connected session's
	// expiry slides forward by this much on every heartbeat.
	SessionTTL time.Duration `env:"SESSION_TTL" envDefault:"24h"`
	// QRWait bounds how long a create request waits for the first QR code.
	QRWait time.Duration `env:"QR_WAIT" envDefault:"3s"`

	// CleanupCron schedules the expired-session cleanup (standard 5-field cron).
	CleanupCron string `env:"CLEANUP_CRON" envDefault:"0 * * * *"`
	// RestoreInterval is how often the reconciler looks for sessions that
	// should be hosted and are not; it bounds failover time after a crash.
	RestoreInterval time.Duration `env:"RESTORE_INTERVAL" envDefault:"1m"`
	// LeaseTTL is how long a worker's claim on a session lasts without a
	// heartbeat; workers renew every LeaseTTL/3.
	LeaseTTL time.Duration `env:"LEASE_TTL" envDefault:"30s"`

	// WorkerID names the worker's own queue (wa:w:<id>); it must be stable
	// across restarts of the same worker (hostname by default).
	WorkerID string `env:"WORKER_ID"`
	// WorkerMaxSessions caps the clients one worker hosts.
	WorkerMaxSessions int `env:"WORKER_MAX_SESSIONS" envDefault:"1000"`
	// WorkerConcurrency is the number of tasks a worker runs at once.
	WorkerConcurrency int `env:"WORKER_CONCURRENCY" envDefault:"20"`
	// MetricsAddr is where a worker serves /metrics and /healthz (the API
	// serves its own on HTTP_ADDR); empty disables it.
	MetricsAddr string `env:"METRICS_ADDR" envDefault:":9091"`
	// APIMetricsAddr, when set, is the only place the API serves /metrics
	// (an internal address); unset, /metrics is on HTTP_ADDR.
	APIMetricsAddr string `env:"API_METRICS_ADDR"`
	// MetricsToken, when set, is the bearer token /metrics requires: the
	// API's and each worker's (METRICS_ADDR; /healthz stays open).
	MetricsToken string `env:"METRICS_TOKEN"`
	// MetricsPprof serves Go's profiler (net/http/pprof) under
	// /debug/pprof/ on a worker's METRICS_ADDR, behind METRICS_TOKEN (which
	// it requires): for finding where a mass restore's CPU goes. Off by
	// default: a profile shows the process's code paths and a goroutine dump
	// its state, nobody's business but the operator's.
	MetricsPprof bool `env:"METRICS_PPROF" envDefault:"false"`
	// RestoreConcurrency caps restores (connects of stored devices) running at
	// once in one worker, so a mass restore does not storm WhatsApp.
	RestoreConcurrency int `env:"RESTORE_CONCURRENCY" envDefault:"4"`

	// RebalanceMaxMoves caps how many sessions one reconcile pass moves from
	// the most to the least loaded workers (each move is a sub-second
	// reconnect, never a QR); 0 turns rebalancing off.
	RebalanceMaxMoves int `env:"REBALANCE_MAX_MOVES" envDefault:"20"`

	// Request rate limits, "N/duration" or "off", counted in Redis and so
	// shared by every API replica (see internal/ratelimit, httpapi.Limits).
	RateLimitCreate       ratelimit.Limit `env:"RATE_LIMIT_CREATE" envDefault:"10/1m"`
	RateLimitDisconnect   ratelimit.Limit `env:"RATE_LIMIT_DISCONNECT" envDefault:"10/1m"`
	RateLimitPairingPhone ratelimit.Limit `env:"RATE_LIMIT_PAIRING_PHONE" envDefault:"3/1h"`
	// RateLimitSend caps POST /messages per user; the default is three
	// times the default SEND_RATE, room for bursts that pacing then spreads.
	RateLimitSend ratelimit.Limit `env:"RATE_LIMIT_SEND" envDefault:"60/1m"`

	// SendRate paces each session's sends (messages per minute, 0 = off),
	// with bursts of up to SendBurst; the bucket lives in Postgres, so a
	// handoff does not reset it.
	SendRate  float64 `env:"SEND_RATE" envDefault:"20"`
	SendBurst int     `env:"SEND_BURST" envDefault:"5"`
	// MessageTTL is how long an outbound message may wait before it fails
	// as expired.
	MessageTTL time.Duration `env:"MESSAGE_TTL" envDefault:"1h"`
	// MessageRetention is how long messages of an ended session are kept.
	MessageRetention time.Duration `env:"MESSAGE_RETENTION" envDefault:"168h"`
	// HistorySync is what a new pairing asks of the phone's history: none
	// (no history blobs downloaded) or recent (the phone's recent sync,
	// its texts stored as received messages).
	HistorySync string `env:"HISTORY_SYNC" envDefault:"none"`

	// MonitorUser and MonitorPassword guard asynqmon at /monitor; without a
	// password the monitor is not served at all. The password is the only
	// thing between the internet and the task queues, hence its minimum
	// length (MinMonitorPassword).
	MonitorUser     string `env:"MONITOR_USER" envDefault:"admin"`
	MonitorPassword string `env:"MONITOR_PASSWORD"`
	// MonitorReadOnly refuses asynqmon's actions (pause a queue, delete,
	// cancel or run tasks): with them, a leaked monitor login can stop a
	// worker's queue, and with it every disconnect that worker owes.
	MonitorReadOnly bool `env:"MONITOR_READONLY" envDefault:"true"`
	// MonitorAddr, when set, serves the monitor on its own listener (an
	// internal address) instead of under HTTP_ADDR.
	MonitorAddr string `env:"MONITOR_ADDR"`

	// WAServerAddr and WAServerPubKey point whatsmeow at another
	// WhatsApp-protocol server (the emulator); unset means real WhatsApp.
	WAServerAddr   string `env:"WA_SERVER_ADDR"`
	WAServerPubKey string `env:"WA_SERVER_PUBKEY"`

	// WAProxy routes this worker's WhatsApp traffic (and its version
	// fetch) through a proxy: socks5://, http:// or https://, optionally
	// with user:password. A session's own proxy (set by an admin) wins.
	WAProxy string `env:"WA_PROXY"`
	// WAVersion pins the client version announced to WhatsApp
	// ("2.3000.1031080782"); unset, the worker fetches the current one.
	WAVersion string `env:"WA_VERSION"`
	// WAVersionURL is the page the current client version is read from;
	// unset, WhatsApp's own (web.whatsapp.com), except with WA_SERVER_ADDR,
	// where nothing is fetched unless this is set.
	WAVersionURL string `env:"WA_VERSION_URL"`
	// WAVersionRefresh is how often the worker fetches the version again.
	WAVersionRefresh time.Duration `env:"WA_VERSION_REFRESH" envDefault:"6h"`
	// DeviceName and DevicePlatform are what the user's phone lists for the
	// linked device: by default "Chrome (Linux)", like a WhatsApp Web tab.
	DeviceName     string `env:"DEVICE_NAME" envDefault:"Linux"`
	DevicePlatform string `env:"DEVICE_PLATFORM" envDefault:"chrome"`
	// ReleaseAfter is how long a linked session may stay without a
	// connection (network errors, refused connections) before its worker
	// gives it to another worker, whose path to WhatsApp may be fine.
	ReleaseAfter time.Duration `env:"RELEASE_AFTER" envDefault:"5m"`

	// Webhooks (docs/ARCHITECTURE.md "Webhooks", docs/SECURITY.md).
	// WebhookAllowHTTP accepts plain http:// endpoint URLs (development
	// only: the events carry message texts).
	WebhookAllowHTTP bool `env:"WEBHOOK_ALLOW_HTTP" envDefault:"false"`
	// WebhookAllowPrivate lets endpoints resolve to loopback, private and
	// link-local addresses (development, tests, the demo); off, such URLs
	// are refused at registration and at connect time.
	WebhookAllowPrivate bool `env:"WEBHOOK_ALLOW_PRIVATE" envDefault:"false"`
	// WebhookRetrySchedule is the wait before each retry of a failed
	// delivery; one attempt more than it has entries.
	WebhookRetrySchedule []time.Duration `env:"WEBHOOK_RETRY_SCHEDULE" envSeparator:"," envDefault:"5s,1m,5m,30m,2h,5h,10h,10h"`
	// WebhookConcurrency is how many deliveries one worker makes at once
	// (an asynq server of their own, apart from the session tasks).
	WebhookConcurrency int `env:"WEBHOOK_CONCURRENCY" envDefault:"32"`
	// WebhookEndpointConcurrency caps one endpoint's deliveries in flight
	// across all workers, so a slow receiver holds that many slots at most.
	WebhookEndpointConcurrency int `env:"WEBHOOK_ENDPOINT_CONCURRENCY" envDefault:"8"`
	// WebhookDisableAfter turns off an endpoint every delivery to which
	// has failed for this long.
	WebhookDisableAfter time.Duration `env:"WEBHOOK_DISABLE_AFTER" envDefault:"120h"`
	// WebhookPollInterval is how often a worker looks for due deliveries
	// when nothing wakes it (a commit notifies it at once).
	WebhookPollInterval time.Duration `env:"WEBHOOK_POLL_INTERVAL" envDefault:"1s"`
	// WebhookMaxEndpoints caps the endpoints one user registers.
	WebhookMaxEndpoints int `env:"WEBHOOK_MAX_ENDPOINTS" envDefault:"10"`
	// WebhookSecretKey, 64 hex characters, encrypts the endpoints' signing
	// secrets in Postgres (AES-256-GCM); api and workers need the same one.
	// Unset, they are stored as they are.
	WebhookSecretKey string `env:"WEBHOOK_SECRET_KEY"`

	// LogLevel is debug, info, warn or error.
	LogLevel string `env:"LOG_LEVEL" envDefault:"info"`
}

// MinMonitorPassword is the shortest MONITOR_PASSWORD the API accepts.
const MinMonitorPassword = 16

// Program names what a Config is validated for.
type Program string

// The programs that share this configuration.
const (
	API       Program = "api"
	Worker    Program = "worker"
	Scheduler Program = "scheduler"
)

// Load reads the configuration through getenv (os.Getenv in production, a
// map in tests). It fails only on values that cannot be parsed; call
// Validate for the rules.
func Load(getenv func(string) string) (Config, error) {
	cfg, err := load(getenv)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// load is Load without the "config: " prefix on its error.
func load(getenv func(string) string) (Config, error) {
	var cfg Config
	params, err := env.GetFieldParams(&cfg)
	if err != nil {
		return cfg, err
	}
	vars := make(map[string]string, len(params))
	for _, p := range params {
		if v := getenv(p.Key); v != "" {
			vars[p.Key] = v
		}
	}
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: vars}); err != nil {
		return cfg, nameVariables(err)
	}
	if cfg.WorkerID == "" {
		host, err := os.Hostname()
		if err != nil {
			return cfg, fmt.Errorf("WORKER_ID is unset and the hostname is unknown: %w", err)
		}
		cfg.WorkerID = host
	}
	return cfg, nil
}

// LoadFor is Load then Validate for program p, as every program starts.
// Its error is the one format an operator sees from every program:
// "invalid configuration:" and then each problem on a line of its own,
// naming the variable to fix.
func LoadFor(getenv func(string) string, p Program) (Config, error) {
	cfg, err := load(getenv)
	if err == nil {
		err = cfg.Validate(p)
	}
	if err != nil {
		return cfg, fmt.Errorf("invalid configuration:\n  %s", strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	return cfg, nil
}

// nameVariables rewrites the library's parse errors, which name Go struct
// fields, to name the environment variable an operator has to fix.
func nameVariables(err error) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	t := reflect.TypeOf(Config{})
	out := make([]error, 0, len(agg.Errors))
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if f, ok := t.FieldByName(pe.Name); ok {
				out = append(out, fmt.Errorf("%s: cannot parse as %s: %w", f.Tag.Get("env"), pe.Type, pe.Err))
				continue
			}
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

var workerIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Validate reports every invalid or missing setting that program p needs,
// joined into one error.
func (c Config) Validate(p Program) error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
	}
	if c.DatabaseURL != "" {
		if u, err := url.Parse(c.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			bad("DATABASE_URL", "must be a postgres:// URL")
		}
	} else if c.DBPort <= 0 || c.DBPort > 65535 {
		bad("DB_PORT", "must be a port number, got %d", c.DBPort)
	}
	switch c.DBSSLMode {
	case "disable", "allow", "prefer", "require", "verify-ca", "verify-full":
	default:
		bad("DB_SSLMODE", "must be disable, allow, prefer, require, verify-ca or verify-full, got %q", c.DBSSLMode)
	}
	if c.DBMaxConns < 2 {
		bad("DB_MAX_CONNS", "must be at least 2, got %d", c.DBMaxConns)
	}
	if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
		bad("REDIS_URL", "must be a redis:// or rediss:// URL")
	} else if c.RedisTLSCAFile != "" && u.Scheme != "rediss" {
		bad("REDIS_TLS_CA_FILE", "is set but REDIS_URL is not rediss://")
	}
	if c.RedisTLSCAFile != "" {
		if _, err := os.Stat(c.RedisTLSCAFile); err != nil {
			bad("REDIS_TLS_CA_FILE", "cannot be read: %v", err)
		}
	}
	for _, a := range c.Redis().SentinelAddrs {
		if h, port, err := net.SplitHostPort(a); err != nil || h == "" || port == "" {
			bad("REDIS_SENTINEL_ADDRS", "must be host:port[,host:port...], got %q", a)
			break
		}
	}
	switch {
	case c.Redis().Sentinel() && c.RedisSentinelMaster == "":
		bad("REDIS_SENTINEL_MASTER", "is required with REDIS_SENTINEL_ADDRS (the name in `sentinel monitor <name> ...`)")
	case !c.Redis().Sentinel() && (c.RedisSentinelMaster != "" || c.RedisSentinelPassword != "" || c.RedisSentinelUsername != ""):
		bad("REDIS_SENTINEL_ADDRS", "is required when REDIS_SENTINEL_MASTER, REDIS_SENTINEL_USERNAME or REDIS_SENTINEL_PASSWORD is set")
	}
	if c.SessionTTL < time.Minute {
		bad("SESSION_TTL", "must be at least 1m, got %s", c.SessionTTL)
	}
	if c.LeaseTTL < 3*time.Second {
		bad("LEASE_TTL", "must be at least 3s, got %s", c.LeaseTTL)
	}
	if c.RestoreInterval < time.Second {
		bad("RESTORE_INTERVAL", "must be at least 1s, got %s", c.RestoreInterval)
	}
	if c.MessageRetention < time.Hour {
		bad("MESSAGE_RETENTION", "must be at least 1h, got %s", c.MessageRetention)
	}
	if c.LogLevel != "" {
		switch strings.ToLower(c.LogLevel) {
		case "debug", "info", "warn", "error":
		default:
			bad("LOG_LEVEL", "must be debug, info, warn or error, got %q", c.LogLevel)
		}
	}
	if c.WAServerAddr != "" {
		if _, port, err := net.SplitHostPort(c.WAServerAddr); err != nil || port == "" {
			bad("WA_SERVER_ADDR", "must be host:port, got %q", c.WAServerAddr)
		}
		if b, err := hex.DecodeString(c.WAServerPubKey); err != nil || len(b) != 32 {
			bad("WA_SERVER_PUBKEY", "must be 64 hex characters when WA_SERVER_ADDR is set")
		}
	} else if c.WAServerPubKey != "" {
		bad("WA_SERVER_PUBKEY", "is set but WA_SERVER_ADDR is not")
	}

	if c.WebhookSecretKey != "" {
		if b, err := hex.DecodeString(c.WebhookSecretKey); err != nil || len(b) != 32 {
			bad("WEBHOOK_SECRET_KEY", "must be 64 hex characters (e.g. openssl rand -hex 32)")
		}
	}
	if (p == API || p == Worker) && c.MetricsToken != "" && len(c.MetricsToken) < 16 {
		bad("METRICS_TOKEN", "must be at least 16 characters, got %d", len(c.MetricsToken))
	}

	switch p {
	case API:
		if c.WebhookMaxEndpoints < 1 || c.WebhookMaxEndpoints > 100 {
			bad("WEBHOOK_MAX_ENDPOINTS", "must be between 1 and 100, got %d", c.WebhookMaxEndpoints)
		}
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			bad("HTTP_ADDR", "must be [host]:port, got %q", c.HTTPAddr)
		}
		if c.JWTSecret == "" {
			bad("JWT_SECRET", "is required (`make run` generates one for local use)")
		} else if len(c.JWTSecret) < 32 {
			bad("JWT_SECRET", "must be at least 32 characters, got %d", len(c.JWTSecret))
		}
		if c.APIMetricsAddr != "" {
			if _, _, err := net.SplitHostPort(c.APIMetricsAddr); err != nil {
				bad("API_METRICS_ADDR", "must be [host]:port or empty, got %q", c.APIMetricsAddr)
			}
		}
		if c.JWTMaxTTL < time.Minute {
			bad("JWT_MAX_TTL", "must be at least 1m, got %s", c.JWTMaxTTL)
		}
		if c.QRWait < 0 || c.QRWait > 30*time.Second {
			bad("QR_WAIT", "must be between 0 and 30s, got %s", c.QRWait)
		}
		if c.StreamsPerUser < 1 {
			bad("STREAMS_PER_USER", "must be at least 1, got %d", c.StreamsPerUser)
		}
		if c.StreamsMax < c.StreamsPerUser {
			bad("STREAMS_MAX", "must be at least STREAMS_PER_USER (%d), got %d", c.StreamsPerUser, c.StreamsMax)
		}
		if c.MonitorPassword != "" && c.MonitorUser == "" {
			bad("MONITOR_USER", "must be set when MONITOR_PASSWORD is")
		}
		if c.MonitorPassword != "" && len(c.MonitorPassword) < MinMonitorPassword {
			bad("MONITOR_PASSWORD", "must be at least %d characters, got %d (e.g. openssl rand -hex 16)", MinMonitorPassword, len(c.MonitorPassword))
		}
		if c.MonitorAddr != "" {
			if _, _, err := net.SplitHostPort(c.MonitorAddr); err != nil {
				bad("MONITOR_ADDR", "must be [host]:port or empty, got %q", c.MonitorAddr)
			} else if c.MonitorAddr == c.HTTPAddr {
				bad("MONITOR_ADDR", "must differ from HTTP_ADDR (leave it empty to serve the monitor there)")
			}
			if c.MonitorPassword == "" {
				bad("MONITOR_ADDR", "is set but MONITOR_PASSWORD is not (the monitor is only served with a password)")
			}
		}
	case Worker:
		if !workerIDPattern.MatchString(c.WorkerID) {
			bad("WORKER_ID", "must be 1-63 letters, digits, '.', '_' or '-', got %q", c.WorkerID)
		}
		if c.WorkerMaxSessions < 1 {
			bad("WORKER_MAX_SESSIONS", "must be at least 1, got %d", c.WorkerMaxSessions)
		}
		if c.WorkerConcurrency < 2 {
			bad("WORKER_CONCURRENCY", "must be at least 2, got %d", c.WorkerConcurrency)
		}
		if c.MetricsAddr != "" {
			if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
				bad("METRICS_ADDR", "must be [host]:port or empty, got %q", c.MetricsAddr)
			}
		}
		if c.MetricsPprof && c.MetricsToken == "" {
			bad("METRICS_PPROF", "needs METRICS_TOKEN (the profiler is served only behind it)")
		}
		if c.MetricsPprof && c.MetricsAddr == "" {
			bad("METRICS_PPROF", "needs METRICS_ADDR (the profiler is served there)")
		}
		if c.RebalanceMaxMoves < 0 {
			bad("REBALANCE_MAX_MOVES", "must be 0 (off) or more, got %d", c.RebalanceMaxMoves)
		}
		if c.WAProxy != "" {
			if _, err := wa.ParseProxy(c.WAProxy); err != nil {
				bad("WA_PROXY", "%v (got %s)", err, wa.RedactProxy(c.WAProxy))
			}
		}
		if _, err := wa.ParseVersion(c.WAVersion); err != nil {
			bad("WA_VERSION", "%v", err)
		}
		if c.WAVersionURL != "" {
			if u, err := url.Parse(c.WAVersionURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad("WA_VERSION_URL", "must be an http:// or https:// URL, got %q", c.WAVersionURL)
			}
		}
		if c.WAVersionRefresh < time.Minute {
			bad("WA_VERSION_REFRESH", "must be at least 1m, got %s", c.WAVersionRefresh)
		}
		if n := len(strings.TrimSpace(c.DeviceName)); n == 0 || n > 40 {
			bad("DEVICE_NAME", "must be 1-40 characters, got %d", n)
		}
		if _, ok := wa.Platforms[strings.ToLower(c.DevicePlatform)]; !ok {
			bad("DEVICE_PLATFORM", "must be one of chrome, firefox, safari, edge, opera, desktop, got %q", c.DevicePlatform)
		}
		if c.ReleaseAfter < time.Second {
			bad("RELEASE_AFTER", "must be at least 1s, got %s", c.ReleaseAfter)
		}
		if c.SendRate < 0 {
			bad("SEND_RATE", "must be 0 (no pacing) or more messages per minute, got %v", c.SendRate)
		}
		if c.SendBurst < 1 {
			bad("SEND_BURST", "must be at least 1, got %d", c.SendBurst)
		}
		if c.MessageTTL < time.Second {
			bad("MESSAGE_TTL", "must be at least 1s, got %s", c.MessageTTL)
		}
		if c.HistorySync != "none" && c.HistorySync != "recent" {
			bad("HISTORY_SYNC", "must be none or recent, got %q", c.HistorySync)
		}
		if c.RestoreConcurrency < 1 {
			bad("RESTORE_CONCURRENCY", "must be at least 1, got %d", c.RestoreConcurrency)
		}
		if n := len(c.WebhookRetrySchedule); n < 1 || n > 20 {
			bad("WEBHOOK_RETRY_SCHEDULE", "must list 1 to 20 durations, got %d", n)
		}
		for _, d := range c.WebhookRetrySchedule {
			if d <= 0 {
				bad("WEBHOOK_RETRY_SCHEDULE", "must list positive durations, got %s", d)
				break
			}
		}
		if c.WebhookConcurrency < 1 {
			bad("WEBHOOK_CONCURRENCY", "must be at least 1, got %d", c.WebhookConcurrency)
		}
		if c.WebhookEndpointConcurrency < 1 {
			bad("WEBHOOK_ENDPOINT_CONCURRENCY", "must be at least 1, got %d", c.WebhookEndpointConcurrency)
		}
		if c.WebhookDisableAfter < time.Minute {
			bad("WEBHOOK_DISABLE_AFTER", "must be at least 1m, got %s", c.WebhookDisableAfter)
		}
		if c.WebhookPollInterval < 10*time.Millisecond || c.WebhookPollInterval > time.Minute {
			bad("WEBHOOK_POLL_INTERVAL", "must be between 10ms and 1m, got %s", c.WebhookPollInterval)
		}
	case Scheduler:
		if _, err := cron.ParseStandard(c.CleanupCron); err != nil {
			bad("CLEANUP_CRON", "is not a valid cron expression: %v", err)
		}
	}
	return errors.Join(errs...)
}

// Redis is how the programs reach Redis, for internal/redisconn.
func (c Config) Redis() redisconn.Settings {
	var addrs []string
	for _, a := range c.RedisSentinelAddrs {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	return redisconn.Settings{
		URL:              c.RedisURL,
		CAFile:           c.RedisTLSCAFile,
		SentinelAddrs:    addrs,
		SentinelMaster:   c.RedisSentinelMaster,
		SentinelUsername: c.RedisSentinelUsername,
		SentinelPassword: c.RedisSentinelPassword,
	}
}

// PostgresURL is the connection string: DATABASE_URL, or one built from the
// DB_* variables.
func (c Config) PostgresURL() string {
	if c.DatabaseURL != "" {
		return c.DatabaseURL
	}
	var hosts []string
	for _, h := range strings.Split(c.DBHost, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, net.JoinHostPort(h, strconv.Itoa(c.DBPort)))
		}
	}
	u := url.URL{
		Scheme: "postgres",
		Host:   "HOSTS",
		Path:   "/" + c.DBName,
	}
	q := url.Values{"sslmode": {c.DBSSLMode}}
	if c.DBSSLRootCert != "" {
		q.Set("sslrootcert", c.DBSSLRootCert)
	}
	if len(hosts) > 1 {
		// Several hosts are a primary and its standbys: connect only to
		// the one that takes writes, whichever it is now (pgx tries them
		// in order, as libpq does).
		q.Set("target_session_attrs", "read-write")
	}
	u.RawQuery = q.Encode()
	if c.DBPassword != "" {
		u.User = url.UserPassword(c.DBUser, c.DBPassword)
	} else {
		u.User = url.User(c.DBUser)
	}
	// url.URL would escape the commas of a host list.
	return strings.Replace(u.String(), "HOSTS", strings.Join(hosts, ","), 1)
}
