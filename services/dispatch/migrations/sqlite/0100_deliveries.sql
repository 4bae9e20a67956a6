-- One row per outbound message: where its delivery stands. The lease columns
-- let exactly one consumer attempt a message at a time, so a duplicated
-- `outbound.requested` never makes two concurrent POSTs.
CREATE TABLE IF NOT EXISTS deliveries (
    workspace_id     TEXT   NOT NULL,
    message_id       TEXT   NOT NULL,
    conversation_id  TEXT   NOT NULL DEFAULT '',
    channel_id       TEXT   NOT NULL,
    state            TEXT   NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    external_id      TEXT   NOT NULL DEFAULT '',
    error            TEXT   NOT NULL DEFAULT '',
    last_attempt_at  INTEGER,
    lease_owner      TEXT   NOT NULL DEFAULT '',
    lease_until      INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, message_id)
);

-- ListDeadLetters: a workspace's failed deliveries, newest first.
CREATE INDEX IF NOT EXISTS deliveries_by_state
    ON deliveries (workspace_id, state, last_attempt_at);
