-- +goose Up
-- Webhooks: a durable, ordered outbox of session and message events
-- (docs/ARCHITECTURE.md "Webhooks"). Triggers write every event, and the
-- delivery of it to every endpoint that wants it, in the transaction that
-- made the change: no code path can change a status without its event, and
-- no event exists without its change.

-- webhook_endpoints: where a user (or, with scope 'all', an admin for every
-- user) wants events delivered.
CREATE TABLE webhook_endpoints (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    scope           TEXT NOT NULL DEFAULT 'user' CHECK (scope IN ('user','all')),
    url             TEXT NOT NULL,
    events          TEXT[] NOT NULL,
    enabled         BOOLEAN NOT NULL DEFAULT true,
    -- Why the service turned the endpoint off: 'gone' (it answered 410) or
    -- 'failing' (every attempt failed for WEBHOOK_DISABLE_AFTER); NULL
    -- when enabled or turned off by its owner.
    disabled_reason TEXT CHECK (disabled_reason IN ('gone','failing')),
    -- The signing secret (whsec_...), encrypted with WEBHOOK_SECRET_KEY when
    -- that is set; the previous one keeps signing until previous_secret_until
    -- after a rotation.
    secret                TEXT NOT NULL,
    previous_secret       TEXT,
    previous_secret_until TIMESTAMPTZ,
    -- Since when every attempt failed; NULL after any success.
    failing_since   TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_webhook_endpoints_user ON webhook_endpoints (user_id, created_at);
CREATE INDEX idx_webhook_endpoints_all ON webhook_endpoints (id) WHERE scope = 'all' AND enabled;

-- webhook_sequences: each session's last event sequence. The trigger bumps
-- it with a row lock held to the end of the transaction, so two
-- transactions of one session commit their events in sequence order and a
-- dispatcher never sees sequence n+1 committed before n.
CREATE TABLE webhook_sequences (
    session_id    VARCHAR(255) PRIMARY KEY,
    last_sequence BIGINT NOT NULL
);

-- webhook_events: every event, whether or not an endpoint wants it. No
-- foreign key to whatsapp_sessions or messages: events outlive the rows
-- they report (cleanup deletes expired sessions).
CREATE TABLE webhook_events (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_id  VARCHAR(255) NOT NULL,
    sequence    BIGINT NOT NULL,
    type        TEXT NOT NULL CHECK (type IN ('session.status','message.received','message.status')),
    occurred_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    -- The changed row as it was committed (secrets and QR data removed);
    -- the delivery renders the API's view from it.
    snapshot    JSONB NOT NULL,
    -- The body, rendered once by the first delivery attempt and sent
    -- byte for byte by every later one (and by a replay).
    body        TEXT,
    UNIQUE (session_id, sequence)
);
CREATE INDEX idx_webhook_events_occurred ON webhook_events (occurred_at);

-- webhook_deliveries: one event to one endpoint. Per (endpoint, session)
-- only the pending row with the lowest sequence is ever attempted.
CREATE TABLE webhook_deliveries (
    endpoint_id     UUID NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    event_id        UUID NOT NULL REFERENCES webhook_events(id) ON DELETE CASCADE,
    session_id      VARCHAR(255) NOT NULL,
    sequence        BIGINT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','delivered','failed')),
    attempts        INT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    -- While an attempt is in flight: until when it may run before another
    -- worker may try again (a worker killed mid-request).
    lease_until     TIMESTAMPTZ,
    last_status     INT,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    delivered_at    TIMESTAMPTZ,
    PRIMARY KEY (endpoint_id, event_id)
);
CREATE INDEX idx_webhook_deliveries_pending ON webhook_deliveries (endpoint_id, session_id, sequence)
    WHERE status = 'pending';
CREATE INDEX idx_webhook_deliveries_event ON webhook_deliveries (event_id);

-- webhook_attempts: every HTTP attempt, for GET .../deliveries.
CREATE TABLE webhook_attempts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id UUID NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    event_id    UUID NOT NULL,
    attempt     INT NOT NULL,
    http_status INT,
    latency_ms  INT NOT NULL,
    error       TEXT,
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id DESC);
CREATE INDEX idx_webhook_attempts_at ON webhook_attempts (at);

-- +goose StatementBegin
CREATE FUNCTION webhook_emit(p_user UUID, p_session TEXT, p_type TEXT, p_snapshot JSONB) RETURNS void AS $$
DECLARE
    v_seq BIGINT;
    v_event UUID;
    v_n INT;
BEGIN
    INSERT INTO webhook_sequences AS s (session_id, last_sequence) VALUES (p_session, 1)
    ON CONFLICT (session_id) DO UPDATE SET last_sequence = s.last_sequence + 1
    RETURNING last_sequence INTO v_seq;
    INSERT INTO webhook_events (user_id, session_id, sequence, type, snapshot)
    VALUES (p_user, p_session, v_seq, p_type, p_snapshot) RETURNING id INTO v_event;
    INSERT INTO webhook_deliveries (endpoint_id, event_id, session_id, sequence)
    SELECT e.id, v_event, p_session, v_seq FROM webhook_endpoints e
    WHERE e.enabled AND (e.user_id = p_user OR e.scope = 'all') AND p_type = ANY (e.events);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n > 0 THEN
        -- Wakes the dispatchers at commit (identical notifications of one
        -- transaction are folded into one).
        PERFORM pg_notify('wasessions_webhooks', '');
    END IF;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION webhook_session_status() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT'
       OR NEW.status IS DISTINCT FROM OLD.status
       OR NEW.status_reason IS DISTINCT FROM OLD.status_reason THEN
        PERFORM webhook_emit(NEW.user_id, NEW.session_id, 'session.status',
            to_jsonb(NEW) - 'qr_code' - 'qr_raw' - 'proxy_url');
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

CREATE TRIGGER trg_whatsapp_sessions_webhook
    AFTER INSERT OR UPDATE OF status, status_reason ON whatsapp_sessions
    FOR EACH ROW EXECUTE FUNCTION webhook_session_status();

-- +goose StatementBegin
CREATE FUNCTION webhook_message() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.direction = 'in' THEN
            PERFORM webhook_emit(NEW.user_id, NEW.session_id, 'message.received',
                to_jsonb(NEW) - 'idempotency_key');
        END IF;
    ELSIF NEW.direction = 'out' AND NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM webhook_emit(NEW.user_id, NEW.session_id, 'message.status',
            to_jsonb(NEW) - 'idempotency_key');
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

CREATE TRIGGER trg_messages_webhook AFTER INSERT OR UPDATE OF status ON messages
    FOR EACH ROW EXECUTE FUNCTION webhook_message();

-- +goose Down
DROP TRIGGER trg_messages_webhook ON messages;
DROP FUNCTION webhook_message();
DROP TRIGGER trg_whatsapp_sessions_webhook ON whatsapp_sessions;
DROP FUNCTION webhook_session_status();
DROP FUNCTION webhook_emit(UUID, TEXT, TEXT, JSONB);
DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
DROP TABLE webhook_events;
DROP TABLE webhook_sequences;
DROP TABLE webhook_endpoints;
