CREATE INDEX IF NOT EXISTS "{index}" ON "{table}" (expires_at) WHERE expires_at IS NOT NULL
