-- Channel secrets are sealed at rest (docs/security.md, "Secrets at rest"):
-- `secret` holds `sealed:v1:<key id>:…`, encrypted under a key of ingress's
-- keyring and bound to its row, and `secret_key` names that key. The keys
-- are not in the database, so the secrets stored in plain text before this
-- migration cannot be sealed here: they keep `secret_key` NULL, are read as
-- plain text, and ingress seals them in the background as soon as it starts
-- (`telenet secrets status` counts what is left).
ALTER TABLE channels ADD COLUMN secret_key TEXT;
CREATE INDEX channels_by_secret_key ON channels (secret_key);
