INSERT INTO "{lease_table}" (session_key, token, expires_at) VALUES (?1, ?2, ?3)
ON CONFLICT (session_key) DO UPDATE
    SET token = excluded.token, expires_at = excluded.expires_at
    WHERE "{lease_table}".expires_at <= ?4
