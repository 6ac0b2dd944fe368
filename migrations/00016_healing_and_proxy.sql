-- +goose Up
-- banned_until: while WhatsApp has banned the account temporarily, when the
-- ban ends; the session waits for it, then reconnects by itself.
-- proxy_url: an admin-set proxy for this session's WhatsApp traffic, applied
-- by whichever worker hosts it. It may carry a password: the API shows it
-- back only redacted, and logs never print it.
ALTER TABLE whatsapp_sessions
    ADD COLUMN banned_until TIMESTAMPTZ,
    ADD COLUMN proxy_url    TEXT;

-- Before this change a linked session ended 'failed' on a 405 (client
-- outdated), a 402 (temporary ban) or another refused login, although its
-- keys stayed valid, so its user had to scan again. Give each such session
-- back to the reconciler once: it becomes 'reconnecting' without a lease and
-- is restored from its keys (if they are gone after all, the restore ends
-- it 'logged_out' as before). Only the newest such session of a user, only
-- for users without a live session (at most one live session per user),
-- and only while the user still wants it and it has not expired.
UPDATE whatsapp_sessions s
SET status = 'reconnecting', status_reason = 'healed_after_upgrade',
    worker_id = NULL, lease_until = NULL, is_connected = false, updated_at = now()
WHERE s.id IN (
    SELECT DISTINCT ON (f.user_id) f.id
    FROM whatsapp_sessions f
    WHERE f.status = 'failed'
      AND f.status_reason IN ('client_outdated', 'temporary_ban', 'connect_failure')
      AND f.device_jid IS NOT NULL
      AND f.desired_state = 'linked'
      AND (f.expires_at IS NULL OR f.expires_at > now())
      AND NOT EXISTS (SELECT 1 FROM whatsapp_sessions o
                      WHERE o.user_id = f.user_id AND o.status IN ('pending','qr','connected','reconnecting'))
    ORDER BY f.user_id, f.created_at DESC
);

-- +goose Down
ALTER TABLE whatsapp_sessions DROP COLUMN banned_until, DROP COLUMN proxy_url;
