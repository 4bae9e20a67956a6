-- API tokens get an id (to list and revoke them by), a recognisable prefix,
-- an optional expiry and when they were last used (minute precision).
ALTER TABLE tokens ADD COLUMN id TEXT;
ALTER TABLE tokens ADD COLUMN prefix TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
-- Tokens issued before: a random id shaped like a UUID; their prefix is
-- unknown (only the hash was kept), so it is the common one.
UPDATE tokens SET
    id = lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2)
        || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2)
        || '-' || hex(randomblob(6))),
    prefix = 'tlnt_'
WHERE id IS NULL;
CREATE UNIQUE INDEX tokens_id ON tokens (id);
-- ListTokens: a workspace's (or member's) tokens, newest first.
CREATE INDEX tokens_by_workspace ON tokens (workspace_id, created_at DESC, id DESC);
