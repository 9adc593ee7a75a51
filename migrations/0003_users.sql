-- Wallet users (issue 5): one row per address that signed in. `address` is
-- the EIP-55 form for Ethereum and the base58 public key for Solana (the two
-- alphabets cannot collide: base58 has no '0').
CREATE TABLE users (
  address TEXT PRIMARY KEY,
  chain TEXT NOT NULL CHECK (chain IN ('ethereum', 'solana')),
  first_seen_ms BIGINT NOT NULL,
  last_login_ms BIGINT NOT NULL,
  logins INTEGER NOT NULL DEFAULT 1
);
