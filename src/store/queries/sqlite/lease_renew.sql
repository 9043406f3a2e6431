UPDATE "{lease_table}" SET expires_at = ?3
WHERE session_key = ?1 AND token = ?2 AND expires_at > ?4
