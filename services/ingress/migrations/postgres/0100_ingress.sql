-- Connected channels. The signing secret is needed in clear to sign outbound
-- requests; protect the database accordingly.
CREATE TABLE channels (
    id                    TEXT   PRIMARY KEY,
    workspace_id          TEXT   NOT NULL,
    kind                  BIGINT NOT NULL,
    name                  TEXT   NOT NULL,
    outbound_url          TEXT   NOT NULL,
    secret                TEXT   NOT NULL,
    accepted_voice_types  TEXT   NOT NULL DEFAULT '[]',
    created_at            BIGINT NOT NULL,
    deleted_at            BIGINT
);
CREATE INDEX channels_by_workspace ON channels (workspace_id, created_at DESC, id DESC);

-- De-duplication keys of accepted webhooks: the delivery id, the message's
-- external id, a status (external id + state).
CREATE TABLE webhook_keys (
    channel_id  TEXT   NOT NULL,
    key         TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (channel_id, key)
);
CREATE INDEX webhook_keys_by_age ON webhook_keys (created_at);
