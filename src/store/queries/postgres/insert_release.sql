WITH saved AS (
    INSERT INTO "{table}" AS t (session_key, data, version, expires_at, due_at)
    VALUES ($1, $2, $3, $4, $6)
    ON CONFLICT (session_key) DO UPDATE
        SET data = EXCLUDED.data, version = EXCLUDED.version, expires_at = EXCLUDED.expires_at,
            due_at = EXCLUDED.due_at
        WHERE t.expires_at IS NOT NULL AND t.expires_at <= $5
    RETURNING 1
), freed AS (
    DELETE FROM "{lease_table}"
    WHERE session_key = $1 AND token = $7 AND EXISTS (SELECT 1 FROM saved)
)
SELECT 1 FROM saved
