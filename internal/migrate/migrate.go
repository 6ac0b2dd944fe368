// Package migrate brings a database to the schema this build expects: the
// service's own goose migrations (migrations/) and whatsmeow's sqlstore
// tables. Every api and worker replica calls Up at start; a Postgres
// advisory lock makes the replicas take turns, so a deploy that starts many
// at once applies each migration exactly once.
package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"go.mau.fi/whatsmeow/store/sqlstore"

	"wasessions/internal/cli"
	"wasessions/internal/store"
	"wasessions/migrations"
)

// lockKey is the advisory lock id all replicas contend on ("wasessio" in ASCII).
const lockKey int64 = 0x7761736573736970

// Up applies pending migrations under the advisory lock and returns when the
// schema is current. It is safe to run any number of times, concurrently.
func Up(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate: connect: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", lockKey); err != nil {
		return fmt.Errorf("migrate: take advisory lock: %w", err)
	}
	defer func() {
		// A fresh context: the lock must be released even if ctx ended.
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockKey)
	}()

	provider, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS,
		goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrate: load migrations: %w", err)
	}
	results, err := provider.Up(ctx)
	for _, r := range results {
		log.InfoContext(ctx, "migration applied", "version", r.Source.Version, "file", r.Source.Path, "duration", r.Duration)
	}
	if err != nil && !errors.Is(err, goose.ErrNoNextVersion) {
		return fmt.Errorf("migrate: apply: %w", err)
	}

	// whatsmeow keeps its own version table; its Upgrade is idempotent but
	// not safe to run concurrently, hence inside the same lock.
	container := sqlstore.NewWithDB(db, "postgres", nil)
	if err := container.Upgrade(ctx); err != nil {
		return fmt.Errorf("migrate: whatsmeow sqlstore: %w", err)
	}
	return nil
}

// UpRetry runs Up, waiting with backoff while Postgres does not answer (a
// deploy often starts the service before its database), for at most
// maxWait. Only unavailability is waited out (store.IsUnavailable): a
// migration that fails, or a database that refuses us, fails at once. When
// ctx ends while it waits, the error wraps ctx.Err(): a program stopped
// while waiting for Postgres can tell it was stopped.
func UpRetry(ctx context.Context, db *sql.DB, log *slog.Logger, maxWait time.Duration) error {
	deadline := time.Now().Add(maxWait)
	backoff := 250 * time.Millisecond
	for {
		err := Up(ctx, db, log)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return errors.Join(err, ctx.Err())
		}
		if !store.IsUnavailable(err) || time.Now().Add(backoff).After(deadline) {
			return err
		}
		log.WarnContext(ctx, "Postgres is not reachable yet; retrying the migrations", "error", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// Open is how the api and every worker start on Postgres: it opens the pool
// (store.Connect), then brings the schema up to date with UpRetry, waiting
// up to maxWait for Postgres to answer. It returns the pool and its
// database/sql view (goose and whatsmeow's sqlstore take one); the caller
// closes both. A DATABASE_URL or DB_* that cannot be parsed is a usage
// error (exit 2). When ctx ends while it waits, the error wraps ctx.Err().
func Open(ctx context.Context, dsn string, maxConns int, log *slog.Logger, maxWait time.Duration) (*pgxpool.Pool, *sql.DB, error) {
	pool, err := store.Connect(ctx, dsn, maxConns)
	if err != nil {
		return nil, nil, cli.Usagef("DATABASE_URL / DB_*: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	if err := UpRetry(ctx, db, log, maxWait); err != nil {
		db.Close()
		pool.Close()
		return nil, nil, fmt.Errorf("database schema: %w", err)
	}
	return pool, db, nil
}
