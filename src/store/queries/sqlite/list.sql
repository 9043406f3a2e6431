SELECT session_key FROM "{table}"
WHERE substr(session_key, 1, length(?1)) = ?1 AND (expires_at IS NULL OR expires_at > ?2)
LIMIT ?3
