-- +goose Up
-- last_worker_id: the worker that hosted a session last. worker_id names the
-- lease holder and is cleared when the lease ends (release, handoff, end of
-- the session), so an operator asking "which sessions failed on worker-2"
-- (GET /api/integrations/admin/sessions?worker=worker-2&status=failed)
-- found none: every ended session had lost its worker. A trigger copies
-- each worker_id a writer sets, so every writer is covered and none of them
-- has to know; the column is never cleared.
ALTER TABLE whatsapp_sessions ADD COLUMN last_worker_id TEXT;

-- Existing rows: the current lease holder, else the last worker the status
-- history recorded.
UPDATE whatsapp_sessions s SET last_worker_id = COALESCE(s.worker_id,
        (SELECT h.worker_id FROM session_status_history h
         WHERE h.session_pk = s.id AND h.worker_id IS NOT NULL ORDER BY h.id DESC LIMIT 1))
    WHERE s.worker_id IS NOT NULL
       OR EXISTS (SELECT 1 FROM session_status_history h WHERE h.session_pk = s.id AND h.worker_id IS NOT NULL);

-- +goose StatementBegin
CREATE FUNCTION remember_session_worker() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.last_worker_id := NEW.worker_id;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd

-- Only writes that name a worker fire it: the heartbeat (lease_until) and
-- status writes that leave worker_id alone cost nothing more.
CREATE TRIGGER trg_whatsapp_sessions_last_worker
    BEFORE INSERT OR UPDATE OF worker_id ON whatsapp_sessions
    FOR EACH ROW WHEN (NEW.worker_id IS NOT NULL) EXECUTE FUNCTION remember_session_worker();

-- The admin list's worker filter reads last_worker_id now; its index
-- replaces the one on worker_id, which served only that filter.
DROP INDEX idx_whatsapp_sessions_admin_worker;
CREATE INDEX idx_whatsapp_sessions_admin_last_worker ON whatsapp_sessions (last_worker_id, created_at DESC, id DESC)
    WHERE last_worker_id IS NOT NULL;

-- +goose Down
DROP INDEX idx_whatsapp_sessions_admin_last_worker;
CREATE INDEX idx_whatsapp_sessions_admin_worker ON whatsapp_sessions (worker_id, created_at DESC, id DESC)
    WHERE worker_id IS NOT NULL;
DROP TRIGGER trg_whatsapp_sessions_last_worker ON whatsapp_sessions;
DROP FUNCTION remember_session_worker();
ALTER TABLE whatsapp_sessions DROP COLUMN last_worker_id;
