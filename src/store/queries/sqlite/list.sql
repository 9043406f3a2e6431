SELECT session_key FROM "{table}"
WHERE substr(CAST(session_key AS BLOB), 1, length(CAST(?1 AS BLOB))) = CAST(?1 AS BLOB)
  AND (expires_at IS NULL OR expires_at > ?2)
LIMIT ?3
