-- Per-key tool allow-lists: a comma-separated list of exposed tool names
-- ("everything__echo") and "<server>__*" patterns; empty: every tool.
ALTER TABLE api_keys ADD COLUMN tools TEXT NOT NULL DEFAULT '';
