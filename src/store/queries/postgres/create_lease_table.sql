CREATE UNLOGGED TABLE IF NOT EXISTS "{lease_table}" (
    session_key TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    token TEXT NOT NULL,
    expires_at BIGINT NOT NULL
)
