CREATE TABLE IF NOT EXISTS "{table}" (
    session_key TEXT NOT NULL PRIMARY KEY,
    data BLOB NOT NULL,
    version INTEGER NOT NULL,
    expires_at INTEGER,
    due_at INTEGER
)
