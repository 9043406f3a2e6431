DELETE FROM "{table}"
WHERE session_key = ?1 AND (version = ?2 OR (expires_at IS NOT NULL AND expires_at <= ?3))
