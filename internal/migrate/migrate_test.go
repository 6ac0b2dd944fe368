package migrate_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"wasessions/internal/migrate"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
)

// A deploy starts many replicas at once, each running Up on an empty
// database: every one must succeed, the schema must end up applied once
// (goose's version table lists each migration once), and whatsmeow's tables
// must exist. Running Up again later changes nothing.
func TestConcurrentUpAppliesOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool, _ := testfactory.DB(t, testenv.NewDatabase(t), 30)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	const replicas = 8
	var wg sync.WaitGroup
	errs := make(chan error, replicas)
	for range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db := stdlib.OpenDBFromPool(pool)
			defer db.Close()
			errs <- migrate.Up(ctx, db, log)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a replica's Up failed: %v", err)
		}
	}

	count := func(q string) int {
		t.Helper()
		var n int
		if err := pool.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	applied := count(`SELECT count(*) FROM goose_db_version WHERE version_id > 0`)
	distinct := count(`SELECT count(DISTINCT version_id) FROM goose_db_version WHERE version_id > 0`)
	if applied == 0 || applied != distinct {
		t.Fatalf("goose version rows: %d, distinct versions: %d (want each applied exactly once)", applied, distinct)
	}
	for _, table := range []string{"users", "whatsapp_sessions", "whatsmeow_device"} {
		if count(`SELECT count(*) FROM information_schema.tables WHERE table_name = '`+table+`'`) != 1 {
			t.Fatalf("table %s missing", table)
		}
	}

	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	if err := migrate.Up(ctx, db, log); err != nil {
		t.Fatalf("re-run: %v", err)
	}
	if got := count(`SELECT count(*) FROM goose_db_version WHERE version_id > 0`); got != applied {
		t.Fatalf("re-run changed the version table: %d -> %d rows", applied, got)
	}
}

// UpRetry waits for a Postgres that is not there yet, then migrates.
func TestUpRetryWaitsForPostgres(t *testing.T) {
	pg := testenv.StartPostgresServer(t)
	dsn := pg.NewDatabase(t)
	pg.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool, db := testfactory.DB(t, dsn, 4)

	done := make(chan error, 1)
	go func() { done <- migrate.UpRetry(ctx, db, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Minute) }()
	select {
	case err := <-done:
		t.Fatalf("UpRetry returned while Postgres was down: %v", err)
	case <-time.After(time.Second):
	}
	pg.Start()
	if err := <-done; err != nil {
		t.Fatalf("UpRetry after Postgres came back: %v", err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM whatsapp_sessions`).Scan(&n); err != nil {
		t.Fatalf("schema not applied: %v", err)
	}
}

// Only an unreachable Postgres is waited out: a database that refuses the
// program (here: it does not exist) fails at once, for the operator to fix,
// instead of after the whole retry window. And a program told to stop while
// it waits gets ctx's error, so it can stop cleanly.
func TestUpRetryWaitsOnlyForUnavailability(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	open := func(t *testing.T, dsn string) *sql.DB {
		_, db := testfactory.DB(t, dsn, 2)
		return db
	}

	t.Run("missing database fails at once", func(t *testing.T) {
		u, err := url.Parse(testenv.AdminDatabaseURL())
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/wasessions_no_such_database"
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err = migrate.UpRetry(ctx, open(t, u.String()), log, time.Hour)
		if err == nil || ctx.Err() != nil {
			t.Fatalf("UpRetry = %v, ctx %v: want a failure before the test's minute", err, ctx.Err())
		}
		if !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("error does not say the database does not exist: %v", err)
		}
	})

	t.Run("stopped while waiting", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- migrate.UpRetry(ctx, open(t, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?sslmode=disable", testenv.FreePort(t))), log, time.Hour)
		}()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("UpRetry after its context ended = %v, want context.Canceled", err)
		}
	})
}
