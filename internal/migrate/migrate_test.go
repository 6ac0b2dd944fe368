package migrate_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"wasessions/internal/migrate"
	"wasessions/internal/store"
	"wasessions/internal/testenv"
)

// A deploy starts many replicas at once, each running Up on an empty
// database: every one must succeed, the schema must end up applied once
// (goose's version table lists each migration once), and whatsmeow's tables
// must exist. Running Up again later changes nothing.
func TestConcurrentUpAppliesOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dsn := testenv.NewDatabase(t)
	pool, err := store.Connect(ctx, dsn, 30)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
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
	pool, err := store.Connect(ctx, dsn, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()

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
