-- The billing ledger (docs/architecture.md, Billing).
--
-- Every movement of money is one entry: `amount_nanos` (> 0) moves from the
-- `debit` account to the `credit` account. An account's balance is what it
-- was credited minus what it was debited, so the balances of all accounts
-- always sum to zero. Entries are chained: `hash` = SHA-256 over the
-- entry's canonical encoding, which includes the previous entry's hash.
CREATE TABLE ledger_entries (
  seq INTEGER PRIMARY KEY,
  ts_ms BIGINT NOT NULL,
  kind TEXT NOT NULL,
  debit TEXT NOT NULL,
  credit TEXT NOT NULL,
  amount_nanos BIGINT NOT NULL,
  request_id TEXT NOT NULL DEFAULT '',
  memo TEXT NOT NULL DEFAULT '',
  meta TEXT NOT NULL DEFAULT '',
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX ledger_entries_debit ON ledger_entries (debit, seq);
CREATE INDEX ledger_entries_credit ON ledger_entries (credit, seq);
CREATE INDEX ledger_entries_request ON ledger_entries (request_id);

CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;

-- Balances as of the last entry, kept in the same transaction as the
-- entries (a cache that `ledger verify` recomputes and compares).
CREATE TABLE ledger_balances (
  account TEXT PRIMARY KEY,
  balance_nanos BIGINT NOT NULL,
  last_seq INTEGER NOT NULL
);

-- Signed checkpoints: Ed25519 over "alou-ledger-checkpoint\n<seq>\n<hash>".
CREATE TABLE ledger_checkpoints (
  seq INTEGER PRIMARY KEY,
  hash TEXT NOT NULL,
  ts_ms BIGINT NOT NULL,
  public_key TEXT NOT NULL,
  signature TEXT NOT NULL
);

-- Funds reserved by requests in flight. A row is deleted in the same
-- transaction as the request's charge; rows left by a crash are released
-- at start-up (nothing was delivered for them).
CREATE TABLE ledger_holds (
  id TEXT PRIMARY KEY,
  account TEXT NOT NULL,
  amount_nanos BIGINT NOT NULL,
  request_id TEXT NOT NULL,
  model TEXT NOT NULL,
  created_at_ms BIGINT NOT NULL
);

-- One row per settled request (free ones too): what /api/usage groups.
CREATE TABLE usage_records (
  id INTEGER PRIMARY KEY,
  ts_ms BIGINT NOT NULL,
  request_id TEXT NOT NULL,
  account TEXT NOT NULL,
  model TEXT NOT NULL,
  provider TEXT NOT NULL,
  prompt_tokens BIGINT NOT NULL,
  completion_tokens BIGINT NOT NULL,
  cached_tokens BIGINT NOT NULL,
  cost_nanos BIGINT NOT NULL,
  estimated INTEGER NOT NULL,
  ledger_seq INTEGER NULL
);
CREATE INDEX usage_records_account_ts ON usage_records (account, ts_ms);
CREATE INDEX usage_records_ts ON usage_records (ts_ms);

-- Price overrides set through PUT /api/admin/prices (nanos per million tokens).
CREATE TABLE prices (
  model TEXT PRIMARY KEY,
  input_nanos_per_mtok BIGINT NOT NULL,
  output_nanos_per_mtok BIGINT NOT NULL,
  cached_input_nanos_per_mtok BIGINT NULL,
  updated_at_ms BIGINT NOT NULL
);

-- The audit timeline: append-only events of a request or conversation.
CREATE TABLE events (
  id INTEGER PRIMARY KEY,
  subject TEXT NOT NULL,
  account TEXT NOT NULL DEFAULT '',
  ts_ms BIGINT NOT NULL,
  kind TEXT NOT NULL,
  data TEXT NOT NULL
);
CREATE INDEX events_subject ON events (subject, id);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
