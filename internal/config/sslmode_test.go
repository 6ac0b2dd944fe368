package config_test

import (
	"context"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"wasessions/internal/config"
	"wasessions/internal/testenv"
)

// TestSSLModeReachesPostgres is finding 7 of issue 8 on the wire: with the
// DB_* settings, the connection that carries the device keys was always
// plain text (sslmode=disable was hard-coded). With DB_SSLMODE=require
// the connection the programs open is TLS, as Postgres itself reports.
func TestSSLModeReachesPostgres(t *testing.T) {
	admin, err := url.Parse(testenv.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(admin.Port())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		mode    string
		wantTLS bool
	}{{"require", true}, {"disable", false}} {
		cfg, err := config.Load(func(k string) string {
			return map[string]string{
				"DB_HOST": admin.Hostname(), "DB_PORT": strconv.Itoa(port), "DB_NAME": admin.Path[1:],
				"DB_USER": admin.User.Username(), "DB_SSLMODE": tc.mode,
			}[k]
		})
		if err != nil {
			t.Fatal(err)
		}
		conn, err := pgx.Connect(ctx, cfg.PostgresURL())
		if err != nil {
			t.Fatalf("DB_SSLMODE=%s: %v (the test Postgres must have ssl=on, as Debian's clusters do)", tc.mode, err)
		}
		var tls bool
		err = conn.QueryRow(ctx, `SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&tls)
		conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if tls != tc.wantTLS {
			t.Fatalf("DB_SSLMODE=%s: the connection is TLS = %v, want %v", tc.mode, tls, tc.wantTLS)
		}
	}
}
