-- Which workspace may read which blob. The bytes live once in the blob store,
-- addressed by their SHA-256; a row here is what makes them visible to a
-- workspace, so identical files uploaded by two workspaces are two rows.
CREATE TABLE blobs (
    workspace_id  TEXT   NOT NULL,
    blob_id       TEXT   NOT NULL,
    size_bytes    BIGINT NOT NULL,
    mime_type     TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, blob_id)
);
