WITH taken AS (
    INSERT INTO "{lease_table}" AS l (session_key, token, expires_at)
    VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $3)
    ON CONFLICT (session_key) DO UPDATE
        SET token = EXCLUDED.token, expires_at = EXCLUDED.expires_at
        WHERE l.expires_at <= (extract(epoch FROM clock_timestamp()) * 1000)::bigint
    RETURNING 1
), got AS (
    SELECT EXISTS (SELECT 1 FROM taken) AS taken
)
SELECT got.taken, s.data, s.version, s.expires_at
FROM got
LEFT JOIN LATERAL (
    SELECT data, version, expires_at FROM "{table}"
    WHERE session_key = $1 AND got.taken
    FOR SHARE SKIP LOCKED
) AS s ON true
