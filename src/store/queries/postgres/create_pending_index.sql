ALTER TABLE "{table}" ADD COLUMN IF NOT EXISTS pending BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX IF NOT EXISTS "{pending_index}" ON "{table}" (session_key) WHERE pending
