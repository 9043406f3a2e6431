SELECT session_key FROM `{table}`
WHERE pending AND (expires_at IS NULL OR expires_at > ?)
LIMIT ?
