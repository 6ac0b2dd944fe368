-- +goose Up
-- The user's current session in index order (issue 14). GET /status, which
-- clients poll, and GET /qr read a user's current session: the live one if
-- any, else the most recent (store's currentOfUser). On
-- idx_whatsapp_sessions_user_id Postgres read the user's rows and sorted
-- them, which cost a poll about as much Postgres CPU as the read itself.
-- This index holds the rows in that order, so the query reads the first
-- entry for the user and stops. Its expression must stay the ORDER BY's
-- (store.currentOfUser), or the planner sorts again
-- (TestCurrentSessionReadsInIndexOrder).
--
-- Heartbeats stay HOT (migration 00020): status and desired_state already
-- decide whether an update is HOT (they are in the predicates of
-- uq_whatsapp_sessions_live_user and idx_whatsapp_sessions_hosting), and
-- user_id, created_at and id never change.
CREATE INDEX idx_whatsapp_sessions_current ON whatsapp_sessions (user_id,
    (desired_state = 'linked' AND status IN ('pending','qr','connected','reconnecting')) DESC,
    created_at DESC, id);

-- +goose Down
DROP INDEX idx_whatsapp_sessions_current;
