// Package store is the service's Postgres layer: every read and write of
// whatsapp_sessions and users, as single SQL statements whose conditions
// carry the design's guarantees (one live session per user, leases with
// epoch fencing, expiry from Postgres' clock). Callers never read-modify-
// write a row; they ask for a transition and learn whether it applied.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Errors callers branch on with errors.Is.
var (
	// ErrNotFound: no such session (or not the caller's).
	ErrNotFound = errors.New("store: session not found")
	// ErrFenced: the write carried a lease epoch that is no longer current;
	// another worker owns the session now, and this one must let go.
	ErrFenced = errors.New("store: lease lost (fenced)")
	// ErrLeaseHeld: another worker holds a live lease on the session.
	ErrLeaseHeld = errors.New("store: lease held by another worker")
	// ErrNotClaimable: the session is not in a state the claim asked for
	// (e.g. a restore of a session the user disconnected).
	ErrNotClaimable = errors.New("store: session not claimable in its current state")
)

// Store runs the service's queries on a pgx pool.
type Store struct {
	pool *pgxpool.Pool
}

// New wraps a pool (see Connect).
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Pool exposes the pool for readiness checks and for database/sql users
// (goose, whatsmeow's sqlstore) that share it.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Connect opens a pool with the settings the service relies on: UTC
// sessions and a bounded size. It does not wait for Postgres to answer, so
// a process can start (and report not-ready) while Postgres is down.
func Connect(ctx context.Context, dsn string, maxConns int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: parse database url: %w", err)
	}
	cfg.ConnConfig.RuntimeParams["timezone"] = "UTC"
	cfg.ConnConfig.RuntimeParams["application_name"] = "wasessions"
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	cfg.HealthCheckPeriod = 10 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: open pool: %w", err)
	}
	return pool, nil
}

// Ping checks that Postgres answers a query.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}

// IsUnavailable reports whether err means Postgres could not be reached or
// is shutting down, as opposed to a query that Postgres rejected. The API
// answers the first with 503.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 08 (connection exception), 57P0x (admin/crash shutdown,
		// cannot connect now), 53300 (too many connections).
		c := pgErr.Code
		return len(c) == 5 && (c[:2] == "08" || c[:4] == "57P0" || c == "53300")
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	var connErr *pgconn.ConnectError
	return errors.As(err, &connErr) || errors.Is(err, context.DeadlineExceeded) || isNetErr(err)
}

func collectOne(rows pgx.Rows) (Session, error) {
	sess, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Session])
	if errors.Is(err, pgx.ErrNoRows) {
		return Session{}, ErrNotFound
	}
	return sess, err
}

func collectAll(rows pgx.Rows) ([]Session, error) {
	return pgx.CollectRows(rows, pgx.RowToStructByName[Session])
}
