CREATE TABLE IF NOT EXISTS "{lease_table}" (
    session_key TEXT NOT NULL PRIMARY KEY,
    token TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID
