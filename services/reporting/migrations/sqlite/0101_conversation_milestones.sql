-- A conversation's opening and its closing, each counted once: the event
-- that counts one inserts its row here in the transaction that adds it to
-- daily_volume; a second event reporting the same (a close that raced
-- another, one published again under a new id) finds the row and adds
-- nothing.
CREATE TABLE IF NOT EXISTS conversation_milestones (
    workspace_id     TEXT NOT NULL,
    conversation_id  TEXT NOT NULL,
    milestone        TEXT NOT NULL,
    PRIMARY KEY (workspace_id, conversation_id, milestone)
);
