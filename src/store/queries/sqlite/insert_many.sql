INSERT INTO "{table}" (session_key, data, version, expires_at, due_at) VALUES {rows}
ON CONFLICT (session_key) DO UPDATE
    SET data = excluded.data, version = excluded.version, expires_at = excluded.expires_at,
        due_at = excluded.due_at
    WHERE "{table}".expires_at IS NOT NULL AND "{table}".expires_at <= ?
RETURNING session_key
