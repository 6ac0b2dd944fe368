-- +goose Up
-- Webhook sequences taken in session order (docs/DESIGN-NOTES.md
-- "Webhooks"). The outbox's row triggers bumped each session's counter in
-- webhook_sequences as they fired, holding its row lock to commit, so a
-- statement took the counters of the sessions it changed in its own row
-- order: two statements that changed the same sessions in different
-- orders (two sweeps, say) deadlocked and Postgres aborted one.
--
-- Now a row trigger only writes its event, unnumbered, with a staging
-- number that keeps the order in which the statement made its events. At
-- the end of the statement, a statement trigger numbers every unnumbered
-- event of the transaction session by session in session_id order
-- (taking each counter's lock, still held to commit, so a session's events
-- still commit in sequence order), and writes their deliveries. Every
-- statement takes its counters in one order, so two statements wait for
-- each other instead of deadlocking. Unnumbered rows are never committed:
-- another transaction sees an event only with its sequence.

CREATE SEQUENCE webhook_events_staged;
ALTER TABLE webhook_events ALTER COLUMN sequence DROP NOT NULL;
-- The order in which a statement made its events, until it numbers them.
ALTER TABLE webhook_events ADD COLUMN staged BIGINT;
CREATE INDEX idx_webhook_events_unnumbered ON webhook_events (session_id, staged) WHERE sequence IS NULL;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION webhook_emit(p_user UUID, p_session TEXT, p_type TEXT, p_snapshot JSONB) RETURNS void AS $$
BEGIN
    INSERT INTO webhook_events (user_id, session_id, sequence, staged, type, snapshot)
    VALUES (p_user, p_session, NULL, nextval('webhook_events_staged'), p_type, p_snapshot);
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION webhook_number() RETURNS trigger AS $$
DECLARE
    r RECORD;
    v_last BIGINT;
    v_d INT;
    v_n INT := 0;
BEGIN
    FOR r IN SELECT session_id, count(*) AS n FROM webhook_events WHERE sequence IS NULL
             GROUP BY session_id ORDER BY session_id LOOP
        INSERT INTO webhook_sequences AS s (session_id, last_sequence) VALUES (r.session_id, r.n)
        ON CONFLICT (session_id) DO UPDATE SET last_sequence = s.last_sequence + r.n
        RETURNING last_sequence INTO v_last;
        WITH numbered AS (
            SELECT id, v_last - r.n + row_number() OVER (ORDER BY staged) AS seq
            FROM webhook_events WHERE session_id = r.session_id AND sequence IS NULL
        ), ev AS (
            UPDATE webhook_events ev SET sequence = numbered.seq FROM numbered WHERE ev.id = numbered.id
            RETURNING ev.id, ev.user_id, ev.session_id, ev.sequence, ev.type
        )
        INSERT INTO webhook_deliveries (endpoint_id, event_id, session_id, sequence)
        SELECT e.id, ev.id, ev.session_id, ev.sequence FROM ev JOIN webhook_endpoints e
            ON e.enabled AND (e.user_id = ev.user_id OR e.scope = 'all') AND ev.type = ANY (e.events);
        GET DIAGNOSTICS v_d = ROW_COUNT;
        v_n := v_n + v_d;
    END LOOP;
    IF v_n > 0 THEN
        -- Wakes the dispatchers at commit (identical notifications of one
        -- transaction are folded into one).
        PERFORM pg_notify('wasessions_webhooks', '');
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

-- Statement triggers fire after the statement's row triggers.
CREATE TRIGGER trg_whatsapp_sessions_webhook_number
    AFTER INSERT OR UPDATE OF status, status_reason ON whatsapp_sessions
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_number();
CREATE TRIGGER trg_messages_webhook_number AFTER INSERT OR UPDATE OF status ON messages
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_number();

-- +goose Down
DROP TRIGGER trg_messages_webhook_number ON messages;
DROP TRIGGER trg_whatsapp_sessions_webhook_number ON whatsapp_sessions;
DROP FUNCTION webhook_number();
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION webhook_emit(p_user UUID, p_session TEXT, p_type TEXT, p_snapshot JSONB) RETURNS void AS $$
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
        PERFORM pg_notify('wasessions_webhooks', '');
    END IF;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd
DROP INDEX idx_webhook_events_unnumbered;
ALTER TABLE webhook_events DROP COLUMN staged;
ALTER TABLE webhook_events ALTER COLUMN sequence SET NOT NULL;
DROP SEQUENCE webhook_events_staged;
