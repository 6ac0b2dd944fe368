package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// HostedCounts is how many sessions each worker holds a live lease on
// (Postgres' clock): the load the rebalancer evens out.
func (s *Store) HostedCounts(ctx context.Context) (map[string]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT worker_id, count(*) FROM whatsapp_sessions
		WHERE status IN `+liveStatuses+` AND worker_id IS NOT NULL AND lease_until > now()
		GROUP BY worker_id`)
	if err != nil {
		return nil, fmt.Errorf("store: hosted counts: %w", err)
	}
	out := map[string]int{}
	var w string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&w, &n}, func() error { out[w] = n; return nil }); err != nil {
		return nil, fmt.Errorf("store: hosted counts: %w", err)
	}
	return out, nil
}

// Movable lists up to limit sessions that workerID hosts and that can move
// to another worker without the user noticing more than a brief reconnect:
// connected, wanted, under a live lease. Sessions still pairing never move
// (their unpaired keys live only in that worker's memory).
func (s *Store) Movable(ctx context.Context, workerID string, limit int) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT session_id FROM whatsapp_sessions
		WHERE worker_id = $1 AND status = 'connected' AND desired_state = 'linked' AND lease_until > now()
		ORDER BY last_seen NULLS FIRST, session_id
		LIMIT $2`, workerID, limit)
	if err != nil {
		return nil, fmt.Errorf("store: movable sessions of %s: %w", workerID, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("store: movable sessions of %s: %w", workerID, err)
	}
	return ids, nil
}
