-- What probing a file found (the encoded telenet.media.v1.ProbeResult),
-- keyed by the content hash and the number of waveform peaks asked for: the
-- same bytes always probe the same, so a file is read and decoded once per
-- form of the answer, whichever workspace asks. Failures are not kept.
CREATE TABLE probes (
    blob_id    TEXT   NOT NULL,
    peaks      BIGINT NOT NULL,
    result     BYTEA  NOT NULL,
    probed_at  BIGINT NOT NULL,
    PRIMARY KEY (blob_id, peaks)
);
