SELECT session_key FROM "{table}"
WHERE session_key LIKE $1 ESCAPE '!' AND (expires_at IS NULL OR expires_at > $2)
LIMIT $3
