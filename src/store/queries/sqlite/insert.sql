INSERT INTO "{table}" (session_key, data, version, expires_at, pending) VALUES (?1, ?2, ?3, ?4, ?6)
ON CONFLICT (session_key) DO UPDATE
    SET data = excluded.data, version = excluded.version, expires_at = excluded.expires_at,
        pending = excluded.pending
    WHERE "{table}".expires_at IS NOT NULL AND "{table}".expires_at <= ?5
