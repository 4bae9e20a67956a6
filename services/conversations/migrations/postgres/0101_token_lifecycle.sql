-- API tokens get an id (to list and revoke them by), a recognisable prefix,
-- an optional expiry and when they were last used (minute precision).
ALTER TABLE tokens ADD COLUMN id TEXT;
ALTER TABLE tokens ADD COLUMN prefix TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE tokens ADD COLUMN last_used_at BIGINT;
-- Tokens issued before: a random id; their prefix is unknown (only the
-- hash was kept), so it is the common one.
UPDATE tokens SET id = gen_random_uuid()::text, prefix = 'tlnt_' WHERE id IS NULL;
ALTER TABLE tokens ALTER COLUMN id SET NOT NULL;
CREATE UNIQUE INDEX tokens_id ON tokens (id);
-- ListTokens: a workspace's (or member's) tokens, newest first.
CREATE INDEX tokens_by_workspace ON tokens (workspace_id, created_at DESC, id DESC);
