ALTER TABLE "{table}" ADD COLUMN IF NOT EXISTS due_at BIGINT;
CREATE INDEX IF NOT EXISTS "{due_index}" ON "{table}" (due_at) WHERE due_at IS NOT NULL;
DO $$
BEGIN
    -- Replies an earlier layout marked pending (a boolean column) stay due.
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = '{table}'
                   AND column_name = 'pending') THEN
        EXECUTE 'UPDATE "{table}" SET due_at = 0 WHERE pending AND due_at IS NULL';
    END IF;
END
$$
