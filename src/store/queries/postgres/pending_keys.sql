SELECT session_key FROM "{table}"
WHERE due_at IS NOT NULL AND due_at <= $3 AND (expires_at IS NULL OR expires_at > $1)
ORDER BY due_at
LIMIT $2
