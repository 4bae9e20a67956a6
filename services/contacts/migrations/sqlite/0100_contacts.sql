CREATE TABLE contacts (
    id            TEXT   PRIMARY KEY,
    workspace_id  TEXT   NOT NULL,
    display_name  TEXT   NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX contacts_by_workspace ON contacts (workspace_id, created_at DESC, id DESC);

-- One contact, several channels: each (channel, external id) belongs to one contact.
CREATE TABLE identities (
    workspace_id  TEXT   NOT NULL,
    channel_id    TEXT   NOT NULL,
    external_id   TEXT   NOT NULL,
    contact_id    TEXT   NOT NULL REFERENCES contacts (id),
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, channel_id, external_id)
);
CREATE INDEX identities_by_contact ON identities (contact_id);
