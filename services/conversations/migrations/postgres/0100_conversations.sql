CREATE TABLE workspaces (
    id          TEXT   PRIMARY KEY,
    name        TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Users of a workspace and their access level (1 agent, 2 manager, 3 owner).
CREATE TABLE members (
    workspace_id  TEXT   NOT NULL,
    user_id       TEXT   NOT NULL,
    name          TEXT   NOT NULL,
    email         TEXT   NOT NULL,
    access_level  BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE UNIQUE INDEX members_email ON members (workspace_id, email);

-- API tokens, stored as SHA-256 hashes.
CREATE TABLE tokens (
    token_hash    TEXT   PRIMARY KEY,
    workspace_id  TEXT   NOT NULL,
    user_id       TEXT   NOT NULL,
    label         TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);

-- status: 1 open, 2 closed.
CREATE TABLE conversations (
    id                   TEXT   PRIMARY KEY,
    workspace_id         TEXT   NOT NULL,
    contact_id           TEXT   NOT NULL,
    channel_id           TEXT   NOT NULL,
    contact_external_id  TEXT   NOT NULL,
    status               BIGINT NOT NULL,
    assignee_user_id     TEXT,
    opened_at            BIGINT NOT NULL,
    closed_at            BIGINT,
    closing_category     TEXT,
    closing_summary      TEXT,
    closed_by            TEXT,
    last_message_at      BIGINT NOT NULL,
    message_count        BIGINT NOT NULL DEFAULT 0
);
-- A contact has at most one open conversation per channel.
CREATE UNIQUE INDEX conversations_one_open ON conversations (workspace_id, contact_id, channel_id) WHERE status = 1;
CREATE INDEX conversations_queue ON conversations (workspace_id, status, last_message_at DESC, id DESC);

-- direction: 1 inbound, 2 outbound. status: see MessageStatus in the proto.
CREATE TABLE messages (
    id                 TEXT   PRIMARY KEY,
    workspace_id       TEXT   NOT NULL,
    conversation_id    TEXT   NOT NULL REFERENCES conversations (id),
    channel_id         TEXT   NOT NULL,
    direction          BIGINT NOT NULL,
    author_user_id     TEXT   NOT NULL DEFAULT '',
    text               TEXT   NOT NULL,
    attachments        BYTEA  NOT NULL,
    status             BIGINT NOT NULL,
    external_id        TEXT   NOT NULL DEFAULT '',
    error              TEXT   NOT NULL DEFAULT '',
    client_message_id  TEXT   NOT NULL DEFAULT '',
    created_at         BIGINT NOT NULL,
    status_changed_at  BIGINT NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, created_at, id);
-- A provider's message id is stored once per channel and direction.
CREATE UNIQUE INDEX messages_external ON messages (channel_id, direction, external_id) WHERE external_id <> '';
-- A client's retried send returns the first message.
CREATE UNIQUE INDEX messages_client_id ON messages (workspace_id, author_user_id, client_message_id) WHERE client_message_id <> '';
