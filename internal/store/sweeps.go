package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// needsWorker matches idx_whatsapp_sessions_hosting's predicate: sessions
// that a worker should host, or whose device keys a worker must delete.
const needsWorker = `(status IN ` + liveStatuses + ` OR (desired_state = ` + sqlGone + ` AND device_jid IS NOT NULL))`

// leaseFree: no worker holds a live lease (Postgres' clock).
const leaseFree = `(lease_until IS NULL OR lease_until <= now())`

// Unhosted lists up to limit sessions that need a worker and have none:
// the gaps between desired and actual state the reconciler closes. The
// oldest lapsed leases come first.
func (s *Store) Unhosted(ctx context.Context, limit int) ([]Session, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+sessionColumns+` FROM whatsapp_sessions
		WHERE `+needsWorker+` AND `+leaseFree+`
		ORDER BY lease_until NULLS FIRST, created_at
		LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("store: unhosted sessions: %w", err)
	}
	return collectAll(rows)
}

// expireSet ends an unhosted live session as expired: why (an unscanned QR
// timed out, or a linked session went unused), no client, no QR, and no
// lease. Clearing the lapsed lease fences its former holder off (see
// ExpireUnhosted).
const expireSet = `status = '` + string(StatusExpired) + `',
	status_reason = CASE WHEN status IN ('` + string(StatusPending) + `','` + string(StatusQR) + `')
		THEN '` + string(ReasonQRTimeout) + `' ELSE '` + string(ReasonSessionExpired) + `' END,
	is_connected = false, qr_code = NULL, qr_raw = NULL, pairing_code = NULL,
	worker_id = NULL, lease_until = NULL, updated_at = now()`

// ExpireUnhosted ends, as expired, up to limit live sessions past their
// expiry that no worker hosts (no client to stop), and returns them.
// Claim refuses expired sessions, so no worker can race this. The lapsed
// lease is cleared with the rest (as End does): its former holder, if it is
// still running (paused, partitioned), is fenced off, so its heartbeat
// reports the session lost and its writes fail instead of bringing an
// expired session back to life.
func (s *Store) ExpireUnhosted(ctx context.Context, limit int) ([]Session, error) {
	rows, err := s.pool.Query(ctx, `UPDATE whatsapp_sessions SET `+expireSet+`
		WHERE id IN (SELECT id FROM whatsapp_sessions
			WHERE status IN `+liveStatuses+` AND `+leaseFree+` AND expires_at <= now()
			ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
		  AND `+leaseFree+`
		RETURNING `+sessionColumns, limit)
	if err != nil {
		return nil, fmt.Errorf("store: expire unhosted: %w", err)
	}
	return collectAll(rows)
}

// MarkHostedExpiredGone marks sessions past their expiry that a worker still
// hosts as no longer wanted, and returns them; the caller tells each owner
// (its worker queue) to stop the client and delete the keys. A connected
// session's expiry slides on every heartbeat, so these are sessions whose
// worker stopped renewing them or a QR nobody scanned for a whole TTL.
func (s *Store) MarkHostedExpiredGone(ctx context.Context) ([]Session, error) {
	rows, err := s.pool.Query(ctx, `UPDATE whatsapp_sessions SET desired_state = $1,
			status_reason = $2, updated_at = now()
		WHERE desired_state = $3 AND expires_at <= now() AND lease_until > now()
		RETURNING `+sessionColumns, DesiredGone, ReasonSessionExpired, DesiredLinked)
	if err != nil {
		return nil, fmt.Errorf("store: mark hosted expired: %w", err)
	}
	return collectAll(rows)
}

// Deleted is a session removed by cleanup.
type Deleted struct {
	SessionID string
	UserID    string
	Status    Status
	DeviceJID *string
}

// DeleteExpired removes up to batch sessions past their expiry that no
// worker hosts, together with their whatsmeow device (whose keys cascade to
// the rest of whatsmeow's tables), in one statement: a crash can leave
// neither a row without its keys deleted nor keys without their row.
//
// whatsmeow_device is whatsmeow's sqlstore table (pinned version, created
// by migrate.Up); deleting its row is exactly what sqlstore.DeleteDevice
// does.
func (s *Store) DeleteExpired(ctx context.Context, batch int) ([]Deleted, error) {
	rows, err := s.pool.Query(ctx, `WITH doomed AS (
			SELECT id FROM whatsapp_sessions
			WHERE expires_at <= now() AND `+leaseFree+`
			ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
		), gone AS (
			DELETE FROM whatsapp_sessions s USING doomed
			WHERE s.id = doomed.id AND (s.lease_until IS NULL OR s.lease_until <= now())
			RETURNING s.session_id, s.user_id, s.status, s.device_jid
		), keys AS (
			DELETE FROM whatsmeow_device d USING gone WHERE d.jid = gone.device_jid
		)
		SELECT session_id, user_id, status, device_jid FROM gone`, batch)
	if err != nil {
		return nil, fmt.Errorf("store: delete expired: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Deleted, error) {
		var d Deleted
		err := r.Scan(&d.SessionID, &d.UserID, &d.Status, &d.DeviceJID)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: delete expired: %w", err)
	}
	return out, nil
}

// DeleteDeviceKeys removes a device's keys from whatsmeow's tables; used
// when a session ends without a connected client to log out through.
func (s *Store) DeleteDeviceKeys(ctx context.Context, deviceJID string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM whatsmeow_device WHERE jid = $1`, deviceJID); err != nil {
		return fmt.Errorf("store: delete device keys: %w", err)
	}
	return nil
}

// DeviceExists reports whether whatsmeow still has keys for the device.
func (s *Store) DeviceExists(ctx context.Context, deviceJID string) (bool, error) {
	var ok bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM whatsmeow_device WHERE jid = $1)`, deviceJID).Scan(&ok); err != nil {
		return false, fmt.Errorf("store: device exists: %w", err)
	}
	return ok, nil
}

// DeviceByNoiseKey is the JID of the whatsmeow device stored with this
// noise key (the private half), or "" when none is. whatsmeow stores a
// device only once it is paired, so this tells whether a client that has
// not reported its pairing yet has in fact paired.
func (s *Store) DeviceByNoiseKey(ctx context.Context, noisePriv []byte) (string, error) {
	var jid string
	err := s.pool.QueryRow(ctx, `SELECT jid FROM whatsmeow_device WHERE noise_key = $1`, noisePriv).Scan(&jid)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("store: device by noise key: %w", err)
	}
	return jid, nil
}
