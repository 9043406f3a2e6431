CREATE INDEX IF NOT EXISTS "{pending_index}" ON "{table}" (session_key) WHERE pending = 1
