SELECT session_key FROM "{table}" INDEXED BY "{pending_index}"
WHERE pending = 1 AND (expires_at IS NULL OR expires_at > ?1)
LIMIT ?2
