DELETE FROM `{table}`
WHERE session_key = ? AND (version = ? OR (expires_at IS NOT NULL AND expires_at <= ?))
