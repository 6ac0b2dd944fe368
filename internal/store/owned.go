package store

import (
	"context"
	"fmt"
)

// OwnedBy lists the live sessions whose lease names workerID, live or
// lapsed: what a worker that restarts under the same stable id hosted
// before. It takes them back at once instead of waiting for their leases
// to run out and the reconciler to notice.
func (s *Store) OwnedBy(ctx context.Context, workerID string) ([]Session, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+sessionColumns+` FROM whatsapp_sessions
		WHERE worker_id = $1 AND desired_state = 'linked' AND status IN `+liveStatuses+`
		ORDER BY session_id`, workerID)
	if err != nil {
		return nil, fmt.Errorf("store: sessions owned by %s: %w", workerID, err)
	}
	return collectAll(rows)
}

// Unlease drops a worker's lease without changing the session's state, so
// that another attempt (a retry, or the reconciler) can claim it; used when
// carrying out a disconnect failed for now. lastErr may be "".
func (s *Store) Unlease(ctx context.Context, f Fence, lastErr ErrorCode) (Session, error) {
	return s.fencedUpdate(ctx, f, `worker_id = NULL, lease_until = NULL, last_error = COALESCE(NULLIF($4, ''), last_error)`, lastErr)
}
