package testfactory

import (
	"context"
	"database/sql"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"wasessions/internal/store"
)

// DB opens dsn as the programs do (store.Connect, at most maxConns
// connections) and returns the pool with its database/sql view (what goose
// and whatsmeow's sqlstore take), both closed when the test ends. It does
// not migrate: see testenv.NewStore for a migrated database.
func DB(t testing.TB, dsn string, maxConns int) (*pgxpool.Pool, *sql.DB) {
	t.Helper()
	pool, err := store.Connect(context.Background(), dsn, maxConns)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	db := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() {
		db.Close()
		pool.Close()
	})
	return pool, db
}
