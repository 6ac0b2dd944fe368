-- +goose Up
-- Numbering only when there is something to number (issue 14). The
-- statement trigger webhook_number (migration 00021) fires after every
-- statement that may change a session's status or a message's, and looked
-- for the transaction's unnumbered events each time, also when its row
-- triggers had made none: a status write that changes nothing, a restore
-- that writes connected again, the outbox's expiry check of every send
-- (an UPDATE of messages that matches no row). Each look scans the index
-- of unnumbered events, whose entries of recently numbered events stay
-- until Postgres can prune them, so under load it cost more the busier
-- the outbox was.
--
-- Now webhook_emit marks the transaction (a transaction-local setting),
-- and webhook_number returns at once unless the mark is set, clearing it
-- before it numbers. The numbering itself is unchanged.

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION webhook_emit(p_user UUID, p_session TEXT, p_type TEXT, p_snapshot JSONB) RETURNS void AS $$
BEGIN
    INSERT INTO webhook_events (user_id, session_id, sequence, staged, type, snapshot)
    VALUES (p_user, p_session, NULL, nextval('webhook_events_staged'), p_type, p_snapshot);
    PERFORM set_config('wasessions.webhook_staged', 'on', true);
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION webhook_number() RETURNS trigger AS $$
DECLARE
    r RECORD;
    v_last BIGINT;
    v_d INT;
    v_n INT := 0;
BEGIN
    IF current_setting('wasessions.webhook_staged', true) IS DISTINCT FROM 'on' THEN
        RETURN NULL; -- no row trigger of this transaction staged an event since the last numbering
    END IF;
    PERFORM set_config('wasessions.webhook_staged', 'off', true);
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

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION webhook_emit(p_user UUID, p_session TEXT, p_type TEXT, p_snapshot JSONB) RETURNS void AS $$
BEGIN
    INSERT INTO webhook_events (user_id, session_id, sequence, staged, type, snapshot)
    VALUES (p_user, p_session, NULL, nextval('webhook_events_staged'), p_type, p_snapshot);
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION webhook_number() RETURNS trigger AS $$
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
        PERFORM pg_notify('wasessions_webhooks', '');
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd
