package e2e

import (
	"context"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"wasessions/e2e/harness"
	"wasessions/internal/store"
	"wasessions/internal/testenv"
)

// The backup drill (docs/OPERATIONS.md "Backups"): pg_dump of a running
// stack with linked sessions, restored into a fresh database; the programs
// started on the restored database bring every linked session back
// connected from the keys in the dump, without a scan, and the emulator
// counts no conflict (the old stack is stopped first, as a real restore
// must be).
func TestBackupDrillRestoresLinkedSessions(t *testing.T) {
	const n = 3
	s := newStack(t, stackOpts{Workers: []string{"w1"}})
	ls := s.linkMany(n, n)
	ids := sessionIDs(ls)
	s.waitAllConnected(ids, harness.WaitLong)

	// 1. The backup, taken while the stack runs (pg_dump is one snapshot:
	//    the sessions and whatsmeow's keys of the same moment).
	dump := filepath.Join(s.Dir, "backup.dump")
	if out, err := exec.Command("pg_dump", "--format=custom", "--file="+dump, "--dbname="+s.DSN).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}

	// 2. The old stack goes away; the dump is restored into a fresh
	//    database, which then takes the old one's name, so the programs
	//    start on it with their configuration unchanged.
	s.StopAll()
	fresh := testenv.NewDatabase(t)
	if out, err := exec.Command("pg_restore", "--no-owner", "--exit-on-error", "--dbname="+fresh, dump).CombinedOutput(); err != nil {
		t.Fatalf("pg_restore: %v\n%s", err, out)
	}
	s.DB.Pool().Close()
	swapDatabases(t, s.DSN, fresh)
	pool, err := pgxpool.New(context.Background(), s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s.DB = store.New(pool)
	var restored string
	if err := pool.QueryRow(context.Background(), `SELECT current_database()`).Scan(&restored); err != nil {
		t.Fatal(err)
	}
	var devices int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM whatsmeow_device`).Scan(&devices); err != nil || devices != n {
		t.Fatalf("restored database holds %d devices (%v), want %d", devices, err, n)
	}

	// 3. The programs on the restored database: every session connected
	//    again from its keys, none paired again, no conflict.
	s.StartAll()
	took := s.waitAllConnected(ids, 2*harness.WaitLong)
	t.Logf("FIGURE backup drill: %d sessions connected %s after the programs started on the restored database (%s)",
		n, took.Round(time.Millisecond), restored)
	s.checkHostedOnce(n)
	s.checkNoRepairing(n)
}

// swapDatabases exchanges the names of the databases of two URLs on the
// same server, so that a's name now holds b's data and the other way round
// (both are still dropped by their tests' cleanups). Nothing may be
// connected to either.
func swapDatabases(t *testing.T, a, b string) {
	t.Helper()
	nameOf := func(dsn string) string {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimPrefix(u.Path, "/")
	}
	an, bn := nameOf(a), nameOf(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, testenv.AdminDatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	for _, name := range []string{an, bn} {
		if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, name); err != nil {
			t.Fatal(err)
		}
	}
	tmp := an + "_swap"
	for _, step := range [][2]string{{an, tmp}, {bn, an}, {tmp, bn}} {
		if _, err := admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{step[0]}.Sanitize()+" RENAME TO "+pgx.Identifier{step[1]}.Sanitize()); err != nil {
			t.Fatalf("rename %s to %s: %v", step[0], step[1], err)
		}
	}
}
