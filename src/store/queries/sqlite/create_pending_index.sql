CREATE INDEX IF NOT EXISTS "{due_index}" ON "{table}" (due_at) WHERE due_at IS NOT NULL
