package deploy

// The security settings the deployment files (docker-compose.yml, the
// Dockerfile, deploy/postgres) must keep. No Docker engine is needed: the
// files are parsed, and the Postgres init script runs against the test
// Postgres.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"go.yaml.in/yaml/v4"

	"wasessions/internal/migrate"
	"wasessions/internal/testenv"
)

type service struct {
	Image       string            `yaml:"image"`
	Build       map[string]string `yaml:"build"`
	Command     []string          `yaml:"command"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	Secrets     []string          `yaml:"secrets"`
	MemLimit    string            `yaml:"mem_limit"`
}

type compose struct {
	Services map[string]service `yaml:"services"`
	Secrets  map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
}

func readCompose(t *testing.T) compose {
	t.Helper()
	b, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	if len(c.Services) < 6 {
		t.Fatalf("docker-compose.yml: %d services parsed", len(c.Services))
	}
	return c
}

var appServices = []string{"api", "worker-1", "worker-2", "scheduler"}

// TestComposeSecuritySettings: the services reach Postgres over verified
// TLS as a role that is not the superuser; Postgres has TLS on and the init
// script that makes that role; every container has a memory limit; the
// services run the production target (no emulator); Redis asks for a
// password and the services send it; the operator UI is published on the
// host's loopback only.
func TestComposeSecuritySettings(t *testing.T) {
	c := readCompose(t)
	for _, name := range appServices {
		s, ok := c.Services[name]
		if !ok {
			t.Fatalf("no service %s", name)
		}
		env := s.Environment
		if m := env["DB_SSLMODE"]; m != "require" && m != "verify-ca" && m != "verify-full" {
			t.Errorf("%s: DB_SSLMODE %q, want require or better", name, m)
		}
		if env["DB_SSLMODE"] != "require" && env["DB_SSLROOTCERT"] == "" {
			t.Errorf("%s: %s without DB_SSLROOTCERT", name, env["DB_SSLMODE"])
		}
		if u := env["DB_USER"]; u == "" || strings.Contains(u, "postgres") {
			t.Errorf("%s: DB_USER %q, want the application role", name, u)
		}
		if env["DATABASE_URL"] != "" {
			t.Errorf("%s: DATABASE_URL would override the DB_* settings checked here", name)
		}
		if s.Build["target"] != "app" {
			t.Errorf("%s: build target %q, want app (the production image)", name, s.Build["target"])
		}
		for _, part := range append(s.Command, s.Entrypoint...) {
			if strings.Contains(part, "waemu") {
				t.Errorf("%s runs the emulator: %v", name, s.Command)
			}
		}
		if !slices.Contains(s.Secrets, "postgres_crt") {
			t.Errorf("%s: the Postgres certificate is not mounted (secrets %v)", name, s.Secrets)
		}
	}
	pg := c.Services["postgres"]
	entry := strings.Join(pg.Entrypoint, " ")
	if !strings.Contains(entry, "ssl=on") || !strings.Contains(entry, "ssl_key_file=") || !strings.Contains(entry, "docker-entrypoint.sh postgres") {
		t.Errorf("postgres: TLS is not turned on: %q", entry)
	}
	if !slices.ContainsFunc(pg.Volumes, func(v string) bool {
		return strings.HasPrefix(v, "./deploy/postgres/init-app-role.sh:/docker-entrypoint-initdb.d/")
	}) {
		t.Errorf("postgres: the application role's init script is not mounted: %v", pg.Volumes)
	}
	if pg.Environment["APP_DB_USER"] != c.Services["api"].Environment["DB_USER"] {
		t.Errorf("postgres creates role %q, the services log in as %q", pg.Environment["APP_DB_USER"], c.Services["api"].Environment["DB_USER"])
	}
	for _, s := range []string{"postgres_crt", "postgres_key"} {
		if c.Secrets[s].File == "" {
			t.Errorf("secret %s has no file", s)
		}
	}
	for name, s := range c.Services {
		if s.MemLimit == "" {
			t.Errorf("%s: no mem_limit", name)
		}
	}
	for _, p := range c.Services["api"].Ports {
		if strings.HasSuffix(p, ":8090") && !strings.HasPrefix(p, "127.0.0.1:") {
			t.Errorf("api: the monitor's port is published beyond loopback: %q", p)
		}
	}
	if c.Services["api"].Environment["MONITOR_ADDR"] == "" {
		t.Error("api: the monitor shares the public port (MONITOR_ADDR unset)")
	}
	if !slices.Contains(c.Services["redis"].Command, "--requirepass") {
		t.Error("redis: no password (--requirepass): anyone on the network could enqueue commands")
	}
	for _, name := range appServices {
		if u := c.Services[name].Environment["REDIS_URL"]; !strings.HasPrefix(u, "redis://:${REDIS_PASSWORD") && !strings.HasPrefix(u, "rediss://:${REDIS_PASSWORD") {
			t.Errorf("%s: REDIS_URL %q carries no password", name, u)
		}
	}
	if !slices.Contains(c.Services["redis"].Command, "--maxmemory") {
		t.Error("redis: no maxmemory under its mem_limit")
	}
}

// TestDockerfileProductionStage: the default target (the last stage) is the
// production image, and it carries no emulator.
func TestDockerfileProductionStage(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	stages := regexp.MustCompile(`(?m)^FROM `).Split(string(b), -1)
	last := stages[len(stages)-1]
	if !strings.Contains(strings.SplitN(last, "\n", 2)[0], " AS app") {
		t.Fatalf("the last stage is not `app`: %q", strings.SplitN(last, "\n", 2)[0])
	}
	if strings.Contains(last, "waemu") {
		t.Errorf("the production stage carries the emulator:\n%s", last)
	}
	var built string
	for _, st := range stages {
		if strings.HasSuffix(strings.SplitN(st, "\n", 2)[0], " AS build") {
			built = st
		}
	}
	if built == "" || strings.Contains(built, "cmd/waemu") || !strings.Contains(built, "./cmd/api") {
		t.Errorf("the build stage the production image copies from: %q", built)
	}
	if !regexp.MustCompile(`(?m)^FROM .* AS waemu$`).Match(b) {
		t.Error("no separate waemu target")
	}
}

// TestInitRoleIsNotSuperuser runs deploy/postgres/init-app-role.sh the way
// the postgres image does, then migrates the schema as the role it made
// (what the services do at start) and tries what only a superuser can:
// run a program on the database server, read another database.
func TestInitRoleIsNotSuperuser(t *testing.T) {
	role := fmt.Sprintf("wsapp_%d", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	adminURL := testenv.AdminDatabaseURL()
	// Registered before the database, so it runs after the database is
	// dropped (the role owns it).
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), adminURL)
		if err != nil {
			t.Errorf("drop role: %v", err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), `DROP ROLE IF EXISTS "`+role+`"`); err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	})
	dsn := testenv.NewDatabase(t)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	script, _ := filepath.Abs("postgres/init-app-role.sh")
	cmd := exec.CommandContext(ctx, "sh", script)
	cmd.Env = append(os.Environ(), "POSTGRES_USER="+cfg.User, "POSTGRES_DB="+cfg.Database,
		"PGHOST="+cfg.Host, fmt.Sprintf("PGPORT=%d", cfg.Port), "PGSSLMODE=disable",
		"APP_DB_USER="+role, "APP_DB_PASSWORD=app-pass-0123456789")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("init-app-role.sh: %v\n%s", err, out)
	}

	appURL := fmt.Sprintf("postgres://%s:app-pass-0123456789@%s:%d/%s?sslmode=disable", role, cfg.Host, cfg.Port, cfg.Database)
	pool, err := pgxpool.New(ctx, appURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	if err := migrate.Up(ctx, db, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("migrations as the application role: %v", err)
	}
	var super, createDB, createRole bool
	if err := pool.QueryRow(ctx, `SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user`).
		Scan(&super, &createDB, &createRole); err != nil {
		t.Fatal(err)
	}
	if super || createDB || createRole {
		t.Fatalf("the application role: superuser %v, createdb %v, createrole %v", super, createDB, createRole)
	}
	var pgErr *pgconn.PgError
	if _, err := pool.Exec(ctx, `COPY (SELECT 1) TO PROGRAM 'true'`); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("COPY TO PROGRAM as the application role: %v, want insufficient_privilege (42501)", err)
	}
	if _, err := pool.Exec(ctx, `CREATE ROLE "`+role+`_x"`); err == nil {
		t.Fatal("the application role created a role")
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM whatsapp_sessions`).Scan(&n); err != nil {
		t.Fatalf("the application role cannot read its own tables: %v", err)
	}
}
