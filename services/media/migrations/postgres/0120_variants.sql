-- Outputs of transcoding profiles, keyed by the source's content hash and the
-- profile: the same bytes give the same variant whichever workspace asks.
-- `state` is pending, ready or failed; `permanent` marks a failure of the
-- input itself (never retried); `lease_until` (µs) is how long the job that
-- claimed a pending row may run before another may take it over.
CREATE TABLE variants (
    source_blob_id TEXT   NOT NULL,
    profile        TEXT   NOT NULL,
    state          TEXT   NOT NULL,
    remuxed        BIGINT NOT NULL DEFAULT 0,
    error          TEXT   NOT NULL DEFAULT '',
    permanent      BIGINT NOT NULL DEFAULT 0,
    lease_until    BIGINT NOT NULL DEFAULT 0,
    attempts       BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    finished_at    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (source_blob_id, profile)
);

-- The output files of a ready variant (several for profiles that split long
-- audio), each a blob of the store.
CREATE TABLE variant_parts (
    source_blob_id TEXT   NOT NULL,
    profile        TEXT   NOT NULL,
    part_index     BIGINT NOT NULL,
    blob_id        TEXT   NOT NULL,
    mime_type      TEXT   NOT NULL,
    size_bytes     BIGINT NOT NULL,
    duration_ms    BIGINT NOT NULL,
    PRIMARY KEY (source_blob_id, profile, part_index)
);
