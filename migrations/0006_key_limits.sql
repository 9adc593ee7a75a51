-- Per-key limits and provider keys stored through the admin API.

-- Requests a key may have in flight at once (NULL: unlimited).
ALTER TABLE api_keys ADD COLUMN max_concurrency INTEGER NULL;

-- Upstream provider API keys, encrypted with libsodium's secretbox
-- (XSalsa20-Poly1305) under ALOU_MASTER_KEY: `sealed` is the 24-byte nonce
-- followed by the ciphertext. The plaintext is never stored.
CREATE TABLE provider_keys (
  provider TEXT PRIMARY KEY,
  sealed BLOB NOT NULL,
  updated_at_ms BIGINT NOT NULL
);
