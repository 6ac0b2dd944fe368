-- +goose Up
-- users: the minimal table the sessions' foreign key needs. The API upserts
-- the caller's id (the JWT subject) on first use.
CREATE TABLE users (
    id         UUID PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- whatsapp_sessions: the columns of the service this replaced, name for
-- name, plus what the distributed design needs (docs/ARCHITECTURE.md). Timestamps are
-- TIMESTAMPTZ so comparisons against Postgres' now() never depend on a
-- connection's TimeZone setting.
CREATE TABLE whatsapp_sessions (
    id               UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_id       VARCHAR(255) UNIQUE NOT NULL,
    qr_code          TEXT,
    is_connected     BOOLEAN DEFAULT FALSE,
    is_authenticated BOOLEAN DEFAULT FALSE,
    phone_number     VARCHAR(20),
    user_name        VARCHAR(255),
    last_seen        TIMESTAMPTZ,
    expires_at       TIMESTAMPTZ,
    created_at       TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at       TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,

    -- What is: the session's lifecycle state, and why it last changed.
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending','qr','connected','reconnecting','disconnected','logged_out','expired','failed')),
    status_reason TEXT,
    -- What should be: 'linked' while the user wants the session, 'gone' once
    -- they disconnect or it expires. The reconciler closes the gap.
    desired_state TEXT NOT NULL DEFAULT 'linked' CHECK (desired_state IN ('linked','gone')),
    -- The whatsmeow device; its keys live in whatsmeow's own tables.
    device_jid    TEXT,
    -- The lease: which worker hosts the live client, until when (Postgres
    -- clock), and the fencing epoch every write of that worker carries.
    worker_id     TEXT,
    lease_until   TIMESTAMPTZ,
    lease_epoch   BIGINT NOT NULL DEFAULT 0,
    last_error    TEXT,
    -- The raw string behind qr_code, for clients that render QR codes
    -- themselves; cleared with qr_code.
    qr_raw        TEXT,
    -- Phone-number pairing: the number asked for and the code to type in.
    pair_phone    VARCHAR(20),
    pairing_code  VARCHAR(16)
);

-- The four indexes of the service this replaced (docs/ARCHITECTURE.md).
CREATE INDEX idx_whatsapp_sessions_user_id    ON whatsapp_sessions (user_id);
CREATE INDEX idx_whatsapp_sessions_session_id ON whatsapp_sessions (session_id);
CREATE INDEX idx_whatsapp_sessions_expires_at ON whatsapp_sessions (expires_at);
CREATE INDEX idx_whatsapp_sessions_connected  ON whatsapp_sessions (is_connected);

-- The reconciler's sweep: only sessions that need a worker (a live status,
-- or device keys still to delete after a disconnect), keyed by when their
-- lease ends, so the sweep stays small however many finished sessions the
-- table keeps.
CREATE INDEX idx_whatsapp_sessions_hosting ON whatsapp_sessions (lease_until)
    WHERE status IN ('pending','qr','connected','reconnecting')
       OR (desired_state = 'gone' AND device_jid IS NOT NULL);

-- At most one live session per user: this is what makes concurrent creates
-- from one user return the same session.
CREATE UNIQUE INDEX uq_whatsapp_sessions_live_user ON whatsapp_sessions (user_id)
    WHERE desired_state = 'linked' AND status IN ('pending','qr','connected','reconnecting');

-- +goose Down
DROP TABLE whatsapp_sessions;
DROP TABLE users;
