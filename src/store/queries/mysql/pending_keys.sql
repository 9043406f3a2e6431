SELECT session_key FROM `{table}`
WHERE due_at IS NOT NULL AND due_at <= ? AND (expires_at IS NULL OR expires_at > ?)
ORDER BY due_at
LIMIT ?
