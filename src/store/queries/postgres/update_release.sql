WITH saved AS (
    UPDATE "{table}" SET data = $1, version = $2, expires_at = $3, due_at = $7
    WHERE session_key = $4 AND version = $5 AND (expires_at IS NULL OR expires_at > $6)
    RETURNING 1
), freed AS (
    DELETE FROM "{lease_table}"
    WHERE session_key = $4 AND token = $8 AND EXISTS (SELECT 1 FROM saved)
)
SELECT 1 FROM saved
