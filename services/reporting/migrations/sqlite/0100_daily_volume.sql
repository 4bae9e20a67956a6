-- Conversations opened/closed and messages in/out per workspace, UTC day
-- (`YYYY-MM-DD`, from the event's occurred_at) and channel. Rows only ever
-- grow, by upserts, each in the transaction that marks its event processed.
CREATE TABLE IF NOT EXISTS daily_volume (
    workspace_id          TEXT   NOT NULL,
    day                   TEXT   NOT NULL,
    channel_id            TEXT   NOT NULL,
    conversations_opened  INTEGER NOT NULL DEFAULT 0,
    conversations_closed  INTEGER NOT NULL DEFAULT 0,
    messages_in           INTEGER NOT NULL DEFAULT 0,
    messages_out          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace_id, day, channel_id)
);
