package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Fence identifies a worker's claim on a session. Every write a worker makes
// to a session it hosts carries its Fence; if another worker has claimed the
// session since (a higher epoch), the write matches no row and fails with
// ErrFenced. This is what keeps a worker that lost its lease, e.g. after a
// long GC pause or a network partition, from overwriting the new owner.
type Fence struct {
	SessionID string
	WorkerID  string
	Epoch     int64
}

// ClaimMode says what a claim is for, which decides the states it accepts.
type ClaimMode int

const (
	// ClaimToHost: pair or restore. The session must still be wanted
	// (desired linked), live, and not past its expiry.
	ClaimToHost ClaimMode = iota
	// ClaimToEnd: carry out a disconnect or expiry. The user must have
	// asked for it (desired gone).
	ClaimToEnd
)

// Claim takes the session's lease for workerID for ttl (Postgres' clock)
// and bumps its epoch. It succeeds when no other worker holds a live lease.
// A worker re-claiming its own session also gets a new epoch, so writes from
// an earlier incarnation of itself are fenced off too.
func (s *Store) Claim(ctx context.Context, sessionID, workerID string, ttl time.Duration, mode ClaimMode) (Session, Fence, error) {
	cond := `desired_state = ` + sqlLinked + ` AND status IN ` + liveStatuses + ` AND (expires_at IS NULL OR expires_at > now())`
	if mode == ClaimToEnd {
		cond = `desired_state = ` + sqlGone
	}
	rows, err := s.pool.Query(ctx, `UPDATE whatsapp_sessions
		SET worker_id = $2, lease_until = now() + $3::interval, lease_epoch = lease_epoch + 1, updated_at = now()
		WHERE session_id = $1
		  AND (worker_id IS NULL OR worker_id = $2 OR lease_until IS NULL OR lease_until <= now())
		  AND `+cond+`
		RETURNING `+sessionColumns, sessionID, workerID, ttl)
	if err != nil {
		return Session{}, Fence{}, fmt.Errorf("store: claim: %w", err)
	}
	sess, err := collectOne(rows)
	if err == nil {
		return sess, Fence{SessionID: sessionID, WorkerID: workerID, Epoch: sess.LeaseEpoch}, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return Session{}, Fence{}, fmt.Errorf("store: claim: %w", err)
	}
	// Say why: missing, held elsewhere, or in the wrong state.
	cur, err := s.Get(ctx, sessionID)
	if err != nil {
		return Session{}, Fence{}, err
	}
	if cur.LeaseLive && Str(cur.WorkerID) != workerID {
		return cur, Fence{}, ErrLeaseHeld
	}
	return cur, Fence{}, ErrNotClaimable
}

// Held is one lease a worker believes it holds.
type Held struct {
	SessionID string
	Epoch     int64
}

// Renewal is the outcome of one heartbeat.
type Renewal struct {
	// Kept are the sessions whose lease was extended.
	Kept map[string]bool
	// Lost are the sessions whose lease was not extended: another worker
	// claimed them, the row is gone, or the user wants them gone. The worker
	// must stop their clients now: their writes would be fenced off
	// anyway (see Fence), and a client left running would keep a socket
	// WhatsApp now expects on the new owner.
	Lost []string
}

// Renew extends, in one statement, every lease in held that workerID still
// holds at that epoch and whose session is still wanted. Connected sessions'
// last_seen moves to now, and their expiry slides to now + sessionTTL once
// it has fallen ExpiryStep behind that.
//
// The statement changes no indexed column on most heartbeats (lease_until
// and last_seen are in no index; expires_at only every ExpiryStep), so
// Postgres renews each lease with a HOT update: no index entry written
// (migrations/00020_hot_heartbeats.sql). The fence is unchanged: the
// (worker, epoch) match below, and every fenced write's.
func (s *Store) Renew(ctx context.Context, workerID string, held []Held, leaseTTL, sessionTTL time.Duration) (Renewal, error) {
	r := Renewal{Kept: make(map[string]bool, len(held))}
	if len(held) == 0 {
		return r, nil
	}
	ids := make([]string, len(held))
	epochs := make([]int64, len(held))
	for i, h := range held {
		ids[i], epochs[i] = h.SessionID, h.Epoch
	}
	rows, err := s.pool.Query(ctx, `UPDATE whatsapp_sessions AS s
		SET lease_until = now() + $4::interval,
		    expires_at = CASE WHEN s.status = 'connected' THEN `+slidExpiry("$5", "$6")+` ELSE s.expires_at END,
		    last_seen  = CASE WHEN s.status = 'connected' THEN now() ELSE s.last_seen END
		FROM unnest($2::text[], $3::bigint[]) AS h(session_id, epoch)
		WHERE s.session_id = h.session_id AND s.lease_epoch = h.epoch
		  AND s.worker_id = $1 AND s.desired_state = 'linked'
		RETURNING s.session_id`, workerID, ids, epochs, leaseTTL, sessionTTL, ExpiryStep(sessionTTL))
	if err != nil {
		return r, fmt.Errorf("store: renew leases: %w", err)
	}
	var id string
	if _, err := pgx.ForEachRow(rows, []any{&id}, func() error { r.Kept[id] = true; return nil }); err != nil {
		return r, fmt.Errorf("store: renew leases: %w", err)
	}
	for _, h := range held {
		if !r.Kept[h.SessionID] {
			r.Lost = append(r.Lost, h.SessionID)
		}
	}
	return r, nil
}

// ExpiryStep is how far a connected session's expiry may fall behind
// now + sessionTTL before a heartbeat slides it: a 24th of the TTL (an
// hour of the default 24 h). A session in use therefore always has at
// least 23/24 of its TTL ahead, and its indexed expires_at is rewritten
// once per step instead of on every heartbeat.
func ExpiryStep(sessionTTL time.Duration) time.Duration { return sessionTTL / 24 }

// slidExpiry is the SQL of a connected session's expires_at after a write
// that keeps it alive (a heartbeat, a connect): now + the TTL once the
// current one has fallen a step behind that, else unchanged, so that the
// write stays a HOT update. ttl and step are the placeholders of the
// session TTL and ExpiryStep of it.
func slidExpiry(ttl, step string) string {
	return `CASE WHEN expires_at IS NULL OR expires_at < now() + ` + ttl + `::interval - ` + step + `::interval
		THEN now() + ` + ttl + `::interval ELSE expires_at END`
}

// ExtendClaim pushes the lease of a claim f still holds to now + ttl
// (Postgres' clock), or fails with ErrFenced. It keeps a claim alive that
// is not hosting (a logout of an unhosted session, which Renew does not
// cover: Renew extends only sessions still wanted). A lease that has
// lapsed but that nobody claimed since is still f's (same epoch).
func (s *Store) ExtendClaim(ctx context.Context, f Fence, ttl time.Duration) error {
	tag, err := s.pool.Exec(ctx, `UPDATE whatsapp_sessions SET lease_until = now() + $4::interval
		WHERE session_id = $1 AND worker_id = $2 AND lease_epoch = $3`, f.SessionID, f.WorkerID, f.Epoch, ttl)
	if err != nil {
		return fmt.Errorf("store: extend claim %s: %w", f.SessionID, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrFenced
	}
	return nil
}

// Release gives a lease up without ending the session, so that another
// worker takes it over: a session with a device becomes reconnecting
// (restored from its keys, no QR); one still pairing goes back to pending
// (pairing starts over; the unpaired keys lived only in this process). lastErr may be "". Used on graceful shutdown and when a restore
// cannot connect.
func (s *Store) Release(ctx context.Context, f Fence, reason Reason, lastErr ErrorCode) (Session, error) {
	return s.fencedUpdate(ctx, f, `status = CASE WHEN device_jid IS NULL THEN $6 ELSE $7 END,
		qr_code = NULL, qr_raw = NULL, pairing_code = NULL,
		status_reason = $4, last_error = COALESCE(NULLIF($5, ''), last_error),
		is_connected = false, worker_id = NULL, lease_until = NULL`, reason, lastErr, StatusPending, StatusReconnecting)
}

// fencedUpdate applies set (with $4... as extra args) to the session only if
// f's epoch is still current, and returns the updated row.
func (s *Store) fencedUpdate(ctx context.Context, f Fence, set string, args ...any) (Session, error) {
	rows, err := s.pool.Query(ctx, `UPDATE whatsapp_sessions SET `+set+`, updated_at = now()
		WHERE session_id = $1 AND worker_id = $2 AND lease_epoch = $3
		RETURNING `+sessionColumns, append([]any{f.SessionID, f.WorkerID, f.Epoch}, args...)...)
	if err != nil {
		return Session{}, fmt.Errorf("store: update %s: %w", f.SessionID, err)
	}
	sess, err := collectOne(rows)
	if errors.Is(err, ErrNotFound) {
		return Session{}, ErrFenced
	}
	return sess, err
}
