-- +goose Up
-- messages: every text sent or received through a linked session. The table
-- is also the outbox: an outbound row in status 'queued' is a send still to
-- be done, by the worker holding the session's lease, in seq order
-- (docs/DESIGN-NOTES.md "Messages"). There is no foreign key to
-- whatsapp_sessions: a session's row may be cleaned up before its messages'
-- retention ends (message_sessions.ended_at decides that).
CREATE TABLE messages (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Acceptance order: the sender takes a session's queued messages by seq,
    -- which is what keeps each chat in the order the API accepted it.
    seq             BIGSERIAL NOT NULL UNIQUE,
    user_id         UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_id      VARCHAR(255) NOT NULL,
    direction       TEXT NOT NULL CHECK (direction IN ('in','out')),
    -- The other party, E.164 ('+' and digits) when WhatsApp gave a phone number.
    chat            TEXT NOT NULL,
    text            TEXT NOT NULL,
    -- Chosen before the first send attempt and reused by every retry, so
    -- the recipient (deduplicating by id) sees one message.
    wa_message_id   TEXT NOT NULL,
    status          TEXT NOT NULL
                    CHECK (status IN ('queued','sent','delivered','read','failed','received')),
    status_reason   TEXT,
    idempotency_key TEXT,
    attempts        INT NOT NULL DEFAULT 0,
    -- When the sender last took it (and a pacing token for it).
    last_attempt_at TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at         TIMESTAMPTZ,
    delivered_at    TIMESTAMPTZ,
    read_at         TIMESTAMPTZ,
    -- WhatsApp's timestamp of an inbound message.
    wa_timestamp    TIMESTAMPTZ
);

-- A delivery that arrives twice is stored once; a receipt finds its message.
CREATE UNIQUE INDEX uq_messages_session_wa_id ON messages (session_id, wa_message_id);
-- Idempotency-Key: one message per key and user (a key older than 24 h is
-- released by the insert that reuses it).
CREATE UNIQUE INDEX uq_messages_user_idempotency ON messages (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The outbox: a session's queued sends in order.
CREATE INDEX idx_messages_outbox ON messages (session_id, seq) WHERE status = 'queued';
-- Listing, newest first, per user.
CREATE INDEX idx_messages_user_seq ON messages (user_id, seq DESC);

-- Every status a message went through, written by a trigger so no code path
-- can change a status without leaving its trace.
CREATE TABLE message_status_history (
    message_id    UUID NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    status        TEXT NOT NULL,
    status_reason TEXT,
    at            TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX idx_message_status_history ON message_status_history (message_id, at);

-- +goose StatementBegin
CREATE FUNCTION messages_record_status() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO message_status_history (message_id, status, status_reason)
        VALUES (NEW.id, NEW.status, NEW.status_reason);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

CREATE TRIGGER trg_messages_status AFTER INSERT OR UPDATE OF status ON messages
    FOR EACH ROW EXECUTE FUNCTION messages_record_status();

-- message_sessions: per session that has messages, the send pacing (a token
-- bucket, so the rate holds whichever worker hosts the session) and when
-- the session ended (what MESSAGE_RETENTION counts from).
CREATE TABLE message_sessions (
    session_id VARCHAR(255) PRIMARY KEY,
    user_id    UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    tokens     DOUBLE PRECISION NOT NULL,
    tokens_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at   TIMESTAMPTZ
);

-- +goose Down
DROP TABLE message_sessions;
DROP TRIGGER trg_messages_status ON messages;
DROP FUNCTION messages_record_status();
DROP TABLE message_status_history;
DROP TABLE messages;
