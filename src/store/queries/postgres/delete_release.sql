WITH gone AS (
    DELETE FROM "{table}"
    WHERE session_key = $1 AND (version = $2 OR (expires_at IS NOT NULL AND expires_at <= $3))
    RETURNING 1
), freed AS (
    DELETE FROM "{lease_table}"
    WHERE session_key = $1 AND token = $4 AND EXISTS (SELECT 1 FROM gone)
)
SELECT 1 FROM gone
