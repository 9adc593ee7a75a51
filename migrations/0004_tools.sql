-- Tools registered through POST /api/tools (the MCP module): command tools
-- and HTTP operations from OpenAPI documents. `spec` is the normalized JSON
-- definition the tool is rebuilt from at start.
CREATE TABLE tools (
  name TEXT PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('command', 'http')),
  owner TEXT NOT NULL,
  risk TEXT NOT NULL CHECK (risk IN ('read_only', 'external_write')),
  spec TEXT NOT NULL,
  created_at_ms BIGINT NOT NULL
);
