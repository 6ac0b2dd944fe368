// Package scripts_test tests the shell scripts that set up a machine.
package scripts_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"wasessions/internal/testenv"
)

// TestServicesTrustOnlyPostgresOnLoopback is the attack of issue 8,
// finding 9 (local services): another local account connects to the
// Postgres that services.sh set up, as a role of its own, without a
// password. services.sh starts a cluster of its own here (a spare port and
// cluster name); afterwards the postgres role connects over loopback
// without a password, as the tests need, and any other role is asked for
// one. Before, services.sh trusted every role on loopback.
func TestServicesTrustOnlyPostgresOnLoopback(t *testing.T) {
	if _, err := exec.LookPath("pg_createcluster"); err != nil {
		t.Fatalf("pg_createcluster missing (Debian's postgresql-common; scripts/services.sh installs it): %v", err)
	}
	port := testenv.FreePort(t)
	cluster := fmt.Sprintf("wstest%d", port)
	_, redisPort, err := net.SplitHostPort(testenv.RedisAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("pg_dropcluster", "--stop", pgVersion(t), cluster).CombinedOutput(); err != nil {
			t.Errorf("pg_dropcluster %s: %v\n%s", cluster, err, out)
		}
	})
	cmd := exec.Command("bash", "services.sh")
	cmd.Env = append(os.Environ(), "WASESSIONS_PG_PORT="+fmt.Sprint(port), "WASESSIONS_PG_CLUSTER="+cluster,
		"WASESSIONS_REDIS_PORT="+redisPort, "DB_NAME=wasessions")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("services.sh: %v\n%s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	connect := func(user string) error {
		c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s@127.0.0.1:%d/wasessions?sslmode=disable&connect_timeout=10", user, port))
		if err == nil {
			err = c.Ping(ctx)
			c.Close(ctx)
		}
		return err
	}
	admin, err := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/wasessions?sslmode=disable", port))
	if err != nil {
		t.Fatalf("postgres without a password over 127.0.0.1 (what the tests need): %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `CREATE ROLE mallory LOGIN`); err != nil {
		t.Fatal(err)
	}
	if err := connect("mallory"); err == nil {
		t.Fatal("another role connected over 127.0.0.1 without a password: services.sh trusts every role")
	}
}

// pgVersion is the newest installed Postgres server version, as
// services.sh picks it.
func pgVersion(t *testing.T) string {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) == 0 {
		t.Fatal("no Postgres server installed")
	}
	sort.Strings(m)
	return filepath.Base(filepath.Dir(filepath.Dir(m[len(m)-1])))
}
