CREATE TABLE IF NOT EXISTS "{table}" (
    session_key TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    data BYTEA NOT NULL,
    version BIGINT NOT NULL,
    expires_at BIGINT,
    due_at BIGINT
)
