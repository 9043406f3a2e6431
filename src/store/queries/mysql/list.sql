SELECT session_key FROM `{table}`
WHERE session_key LIKE ? ESCAPE '!' AND (expires_at IS NULL OR expires_at > ?)
LIMIT ?
