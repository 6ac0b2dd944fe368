-- +goose Up
-- Heartbeats without index writes (issue 14). A heartbeat rewrites
-- lease_until (and, for a connected session, last_seen and now and then
-- expires_at) of every session a worker holds. An UPDATE that changes no
-- indexed column, and finds room on the row's page, is a HOT update: a new
-- row version on the same page and no index entry at all. lease_until was
-- the key of idx_whatsapp_sessions_hosting, so every renewal wrote into
-- every index of the table.
--
-- The reconciler's sweep keeps its partial index (same name, same
-- predicate: only sessions that need a worker), keyed now by a column that
-- never changes; it reads lease_until from the rows it matches. expires_at
-- keeps its index (the replaced service's, kept by name) and slides in
-- steps (store.Renew), so few heartbeats change it.
--
-- A heartbeat updates every session of its worker at once, so a page must
-- have room for a new version of every row on it: rows fill at most 45% of
-- a page, and the first heartbeat to read a page prunes the versions the
-- previous one left dead (once no snapshot in the cluster can still see
-- them: a long transaction anywhere holds this back, as it holds back
-- vacuum), freeing the rest again.
DROP INDEX idx_whatsapp_sessions_hosting;
CREATE INDEX idx_whatsapp_sessions_hosting ON whatsapp_sessions (session_id)
    WHERE status IN ('pending','qr','connected','reconnecting')
       OR (desired_state = 'gone' AND device_jid IS NOT NULL);
ALTER TABLE whatsapp_sessions SET (fillfactor = 45);

-- +goose Down
DROP INDEX idx_whatsapp_sessions_hosting;
CREATE INDEX idx_whatsapp_sessions_hosting ON whatsapp_sessions (lease_until)
    WHERE status IN ('pending','qr','connected','reconnecting')
       OR (desired_state = 'gone' AND device_jid IS NOT NULL);
ALTER TABLE whatsapp_sessions RESET (fillfactor);
