INSERT INTO "{lease_table}" (session_key, token, expires_at) VALUES {rows}
ON CONFLICT (session_key) DO UPDATE
    SET token = excluded.token, expires_at = excluded.expires_at
    WHERE "{lease_table}".expires_at <= ?
RETURNING token,
    (SELECT s.data FROM "{table}" AS s WHERE s.session_key = "{lease_table}".session_key),
    (SELECT s.version FROM "{table}" AS s WHERE s.session_key = "{lease_table}".session_key),
    (SELECT s.expires_at FROM "{table}" AS s WHERE s.session_key = "{lease_table}".session_key)
