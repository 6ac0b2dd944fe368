package config

import (
	"strings"
	"testing"
	"time"

	"wasessions/internal/ratelimit"
)

func getenvFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

const goodSecret = "0123456789abcdef0123456789abcdef"

func TestLoadDefaults(t *testing.T) {
	cfg, err := Load(getenvFrom(map[string]string{"WORKER_ID": "w1"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != ":8080" || cfg.SessionTTL != 24*time.Hour || cfg.LeaseTTL != 30*time.Second ||
		cfg.RestoreInterval != time.Minute || cfg.QRWait != 3*time.Second || cfg.CleanupCron != "0 * * * *" ||
		!cfg.MonitorReadOnly || cfg.RateLimitPairingPhone != (ratelimit.Limit{N: 3, Per: time.Hour}) ||
		cfg.RateLimitCreate != (ratelimit.Limit{N: 10, Per: time.Minute}) || cfg.RateLimitDisconnect != (ratelimit.Limit{N: 10, Per: time.Minute}) ||
		cfg.RateLimitSend != (ratelimit.Limit{N: 60, Per: time.Minute}) {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
	if len(cfg.WebhookRetrySchedule) != 8 || cfg.WebhookRetrySchedule[0] != 5*time.Second || cfg.WebhookRetrySchedule[7] != 10*time.Hour ||
		cfg.WebhookAllowHTTP || cfg.WebhookAllowPrivate || cfg.WebhookDisableAfter != 120*time.Hour {
		t.Fatalf("unexpected webhook defaults: %+v", cfg)
	}
	if got, want := cfg.PostgresURL(), "postgres://postgres@127.0.0.1:5432/wasessions?sslmode=prefer"; got != want {
		t.Fatalf("PostgresURL = %q, want %q", got, want)
	}
}

func TestPostgresURL(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"database url wins", map[string]string{"DATABASE_URL": "postgres://a@b/c", "DB_HOST": "x"}, "postgres://a@b/c"},
		{"seed variables", map[string]string{"DB_HOST": "db", "DB_PORT": "6543", "DB_NAME": "n", "DB_USER": "u", "DB_PASSWORD": "p@ss"},
			"postgres://u:p%40ss@db:6543/n?sslmode=prefer"},
		{"primary and standbys", map[string]string{"DB_HOST": "pg-a, pg-b,pg-c", "DB_PORT": "6432", "DB_PASSWORD": "p@ss"},
			"postgres://postgres:p%40ss@pg-a:6432,pg-b:6432,pg-c:6432/wasessions?sslmode=prefer&target_session_attrs=read-write"},
		{"verify-full", map[string]string{"DB_HOST": "postgres", "DB_SSLMODE": "verify-full", "DB_SSLROOTCERT": "/run/secrets/pg ca.crt"},
			"postgres://postgres@postgres:5432/wasessions?sslmode=verify-full&sslrootcert=%2Frun%2Fsecrets%2Fpg+ca.crt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(getenvFrom(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.PostgresURL(); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLoadRejectsUnparsable(t *testing.T) {
	for _, kv := range [][2]string{{"LEASE_TTL", "soon"}, {"DB_PORT", "five"}, {"WORKER_MAX_SESSIONS", "many"},
		{"RATE_LIMIT_CREATE", "10"}, {"RATE_LIMIT_PAIRING_PHONE", "0/1h"}} {
		if _, err := Load(getenvFrom(map[string]string{kv[0]: kv[1]})); err == nil || !strings.Contains(err.Error(), kv[0]) {
			t.Errorf("%s=%s: err = %v, want one naming the variable", kv[0], kv[1], err)
		}
	}
}

// The Sentinel settings reach redisconn as they were given, addresses
// trimmed; without them the client is a plain one on REDIS_URL.
func TestRedisSettings(t *testing.T) {
	cfg, err := Load(getenvFrom(map[string]string{"REDIS_URL": "redis://:pw@ignored:6379/3",
		"REDIS_SENTINEL_ADDRS": "10.0.0.1:26379, 10.0.0.2:26379,,", "REDIS_SENTINEL_MASTER": "mymaster",
		"REDIS_SENTINEL_USERNAME": "sentinel-user", "REDIS_SENTINEL_PASSWORD": "sentinel-pw"}))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Redis()
	if !s.Sentinel() || len(s.SentinelAddrs) != 2 || s.SentinelAddrs[0] != "10.0.0.1:26379" || s.SentinelAddrs[1] != "10.0.0.2:26379" ||
		s.SentinelMaster != "mymaster" || s.SentinelUsername != "sentinel-user" || s.SentinelPassword != "sentinel-pw" || s.URL != "redis://:pw@ignored:6379/3" {
		t.Fatalf("Redis() = %+v", s)
	}
	cfg, err = Load(getenvFrom(nil))
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Redis(); s.Sentinel() || s.URL != "redis://127.0.0.1:6379/0" {
		t.Fatalf("Redis() without Sentinel = %+v", s)
	}
}

func TestRateLimitOff(t *testing.T) {
	cfg, err := Load(getenvFrom(map[string]string{"RATE_LIMIT_CREATE": "off", "RATE_LIMIT_PAIRING_PHONE": "5/24h"}))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.RateLimitCreate.Off() || cfg.RateLimitPairingPhone != (ratelimit.Limit{N: 5, Per: 24 * time.Hour}) {
		t.Fatalf("create %v, pairing %v", cfg.RateLimitCreate, cfg.RateLimitPairingPhone)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		program Program
		env     map[string]string
		wantErr string // substring; empty means valid
	}{
		{"api ok", API, map[string]string{"JWT_SECRET": goodSecret}, ""},
		{"api without secret", API, nil, "JWT_SECRET: is required"},
		{"api short secret", API, map[string]string{"JWT_SECRET": "short"}, "at least 32"},
		{"worker needs no secret", Worker, map[string]string{"WORKER_ID": "w-1"}, ""},
		{"bad worker id", Worker, map[string]string{"WORKER_ID": "a b"}, "WORKER_ID"},
		{"tiny lease", Worker, map[string]string{"WORKER_ID": "w", "LEASE_TTL": "1s"}, "LEASE_TTL"},
		{"bad cron", Scheduler, map[string]string{"CLEANUP_CRON": "every hour"}, "CLEANUP_CRON"},
		{"redis url", Scheduler, map[string]string{"REDIS_URL": "localhost:6379"}, "REDIS_URL"},
		{"emulator without key", Worker, map[string]string{"WORKER_ID": "w", "WA_SERVER_ADDR": "127.0.0.1:9"}, "WA_SERVER_PUBKEY"},
		{"emulator ok", Worker, map[string]string{"WORKER_ID": "w", "WA_SERVER_ADDR": "127.0.0.1:9", "WA_SERVER_PUBKEY": strings.Repeat("ab", 32)}, ""},
		{"key without addr", Worker, map[string]string{"WORKER_ID": "w", "WA_SERVER_PUBKEY": strings.Repeat("ab", 32)}, "WA_SERVER_ADDR is not"},
		{"monitor password ok", API, map[string]string{"JWT_SECRET": goodSecret, "MONITOR_PASSWORD": "0123456789abcdef"}, ""},
		{"monitor password short", API, map[string]string{"JWT_SECRET": goodSecret, "MONITOR_PASSWORD": "change-me"}, "MONITOR_PASSWORD: must be at least 16"},
		{"monitor addr", API, map[string]string{"JWT_SECRET": goodSecret, "MONITOR_PASSWORD": "0123456789abcdef", "MONITOR_ADDR": "127.0.0.1:9000"}, ""},
		{"monitor addr bad", API, map[string]string{"JWT_SECRET": goodSecret, "MONITOR_PASSWORD": "0123456789abcdef", "MONITOR_ADDR": "nine"}, "MONITOR_ADDR"},
		{"monitor addr same", API, map[string]string{"JWT_SECRET": goodSecret, "MONITOR_PASSWORD": "0123456789abcdef", "MONITOR_ADDR": ":8080"}, "MONITOR_ADDR: must differ"},
		{"monitor addr no password", API, map[string]string{"JWT_SECRET": goodSecret, "MONITOR_ADDR": "127.0.0.1:9000"}, "MONITOR_ADDR"},
		{"ssl mode", Worker, map[string]string{"WORKER_ID": "w", "DB_SSLMODE": "on"}, "DB_SSLMODE"},
		{"log level", API, map[string]string{"JWT_SECRET": goodSecret, "LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{"sentinel ok", Scheduler, map[string]string{"REDIS_SENTINEL_ADDRS": "s1:26379, s2:26379,s3:26379", "REDIS_SENTINEL_MASTER": "mymaster"}, ""},
		{"sentinel without master", Scheduler, map[string]string{"REDIS_SENTINEL_ADDRS": "s1:26379"}, "REDIS_SENTINEL_MASTER: is required"},
		{"sentinel bad addr", Scheduler, map[string]string{"REDIS_SENTINEL_ADDRS": "s1:26379,s2", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINEL_ADDRS: must be host:port"},
		{"sentinel master without addrs", Scheduler, map[string]string{"REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINEL_ADDRS: is required"},
		{"sentinel password without addrs", Scheduler, map[string]string{"REDIS_SENTINEL_PASSWORD": "p"}, "REDIS_SENTINEL_ADDRS: is required"},
		{"webhook schedule", Worker, map[string]string{"WORKER_ID": "w", "WEBHOOK_RETRY_SCHEDULE": "1s,0s"}, "WEBHOOK_RETRY_SCHEDULE"},
		{"webhook schedule ok", Worker, map[string]string{"WORKER_ID": "w", "WEBHOOK_RETRY_SCHEDULE": "100ms,1s"}, ""},
		{"webhook secret key", API, map[string]string{"JWT_SECRET": goodSecret, "WEBHOOK_SECRET_KEY": "abc"}, "WEBHOOK_SECRET_KEY"},
		{"webhook secret key ok", API, map[string]string{"JWT_SECRET": goodSecret, "WEBHOOK_SECRET_KEY": strings.Repeat("ab", 32)}, ""},
		{"webhook endpoints cap", API, map[string]string{"JWT_SECRET": goodSecret, "WEBHOOK_MAX_ENDPOINTS": "0"}, "WEBHOOK_MAX_ENDPOINTS"},
		{"webhook endpoint concurrency", Worker, map[string]string{"WORKER_ID": "w", "WEBHOOK_ENDPOINT_CONCURRENCY": "0"}, "WEBHOOK_ENDPOINT_CONCURRENCY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(getenvFrom(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.Validate(tt.program)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// Every program reports bad configuration in one format: a heading, then
// each problem (unparsable or invalid) indented on a line of its own,
// naming the variable.
func TestLoadForFormat(t *testing.T) {
	tests := []struct {
		name    string
		program Program
		env     map[string]string
		want    string
	}{
		{"unparsable", Worker, map[string]string{"WORKER_ID": "w", "LEASE_TTL": "soon"},
			"invalid configuration:\n  LEASE_TTL: cannot parse"},
		{"two invalid", API, map[string]string{"JWT_SECRET": "short", "LOG_LEVEL": "loud"},
			"invalid configuration:\n  LOG_LEVEL: must be debug, info, warn or error, got \"loud\"\n  JWT_SECRET: must be at least 32 characters"},
		{"invalid for the scheduler", Scheduler, map[string]string{"CLEANUP_CRON": "every hour"},
			"invalid configuration:\n  CLEANUP_CRON: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadFor(getenvFrom(tt.env), tt.program)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("err = %q, want it to start with %q", err, tt.want)
			}
			for _, line := range strings.Split(err.Error(), "\n")[1:] {
				if !strings.HasPrefix(line, "  ") || !strings.Contains(line, ":") {
					t.Fatalf("line %q is not an indented VARIABLE: problem", line)
				}
			}
		})
	}
	if _, err := LoadFor(getenvFrom(map[string]string{"JWT_SECRET": goodSecret}), API); err != nil {
		t.Fatalf("valid configuration refused: %v", err)
	}
}
