-- Initial schema. schema_migrations is created by the migration runner.

-- The embedded KV's write-behind copy (absent rows: the key does not exist).
CREATE TABLE kv (
  key TEXT PRIMARY KEY,
  value BLOB NOT NULL,
  expires_at_ms BIGINT NULL
);
CREATE INDEX kv_expires_at_ms ON kv (expires_at_ms);

-- Gateway API keys. Only the SHA-256 of the secret is kept; `prefix` is the
-- start of the secret, shown in listings so a key can be recognised.
CREATE TABLE api_keys (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  secret_hash TEXT NOT NULL UNIQUE,
  prefix TEXT NOT NULL,
  role TEXT NOT NULL CHECK (role IN ('owner', 'member')),
  models TEXT NOT NULL DEFAULT '',
  rpm INTEGER NULL,
  tpm INTEGER NULL,
  budget_nanos BIGINT NULL,
  created_at_ms BIGINT NOT NULL,
  revoked_at_ms BIGINT NULL
);
