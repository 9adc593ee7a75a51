-- The settlement journal (docs/billing.md, "The settlement journal"): a
-- settlement is durable once appended to data_dir/ledger.journal; the
-- ledger's tables get it a moment later, in a larger group commit. This
-- row says which journal records the tables already hold: those with an id
-- up to `applied`. It is updated in the same transaction as their rows, so
-- a record is applied exactly once, whenever the process stops.
CREATE TABLE ledger_journal (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  applied INTEGER NOT NULL
);
INSERT INTO ledger_journal (id, applied) VALUES (1, 0);
