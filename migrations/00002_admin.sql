-- +goose Up
-- The operators' view (GET /api/integrations/admin/sessions): every user's
-- sessions, newest first, filtered by status or worker, paged by a keyset
-- cursor on (created_at, id). Each index below serves one of those shapes
-- without a sort, so a page costs the same at 100,000 sessions as at 100
-- (docs/BENCHMARKS.md "Admin list query"); a user's few sessions come
-- from idx_whatsapp_sessions_user_id.
CREATE INDEX idx_whatsapp_sessions_admin_created ON whatsapp_sessions (created_at DESC, id DESC);
CREATE INDEX idx_whatsapp_sessions_admin_status  ON whatsapp_sessions (status, created_at DESC, id DESC);
CREATE INDEX idx_whatsapp_sessions_admin_worker  ON whatsapp_sessions (worker_id, created_at DESC, id DESC)
    WHERE worker_id IS NOT NULL;

-- session_status_history: every change of a session's status or reason,
-- written by a trigger in the transaction that made the change, so every
-- writer (API, worker, reconciler, cleanup, a human with psql) is covered
-- and no change is recorded that did not commit. Rows go with their
-- session (ON DELETE CASCADE); cleanup also prunes old rows in batches.
CREATE TABLE session_status_history (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_pk    UUID NOT NULL REFERENCES whatsapp_sessions(id) ON DELETE CASCADE,
    status        TEXT NOT NULL,
    status_reason TEXT,
    worker_id     TEXT,
    last_error    TEXT,
    changed_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX idx_session_status_history_session ON session_status_history (session_pk, id DESC);
CREATE INDEX idx_session_status_history_changed ON session_status_history (changed_at);

-- +goose StatementBegin
CREATE FUNCTION record_session_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT'
       OR NEW.status IS DISTINCT FROM OLD.status
       OR NEW.status_reason IS DISTINCT FROM OLD.status_reason THEN
        INSERT INTO session_status_history (session_pk, status, status_reason, worker_id, last_error)
        VALUES (NEW.id, NEW.status, NEW.status_reason, NEW.worker_id, NEW.last_error);
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER trg_whatsapp_sessions_status_history
    AFTER INSERT OR UPDATE OF status, status_reason ON whatsapp_sessions
    FOR EACH ROW EXECUTE FUNCTION record_session_status();

-- +goose Down
DROP TRIGGER trg_whatsapp_sessions_status_history ON whatsapp_sessions;
DROP FUNCTION record_session_status();
DROP TABLE session_status_history;
DROP INDEX idx_whatsapp_sessions_admin_worker;
DROP INDEX idx_whatsapp_sessions_admin_status;
DROP INDEX idx_whatsapp_sessions_admin_created;
