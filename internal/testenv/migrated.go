package testenv

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"wasessions/internal/migrate"
	"wasessions/internal/store"
)

// NewStore creates a fresh database (see NewDatabase), applies the
// service's migrations and whatsmeow's schema to it, and returns a Store on
// it with its DSN. The pool is closed before the database is dropped.
func NewStore(t testing.TB) (*store.Store, string) {
	t.Helper()
	dsn := NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := store.Connect(ctx, dsn, 20)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(pool.Close)
	Migrate(t, pool)
	return store.New(pool), dsn
}

// Migrate applies all migrations to the pool's database.
func Migrate(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := migrate.Up(ctx, db, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatalf("testenv: migrate: %v", err)
	}
}
