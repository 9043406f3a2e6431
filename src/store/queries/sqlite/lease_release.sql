DELETE FROM "{lease_table}" WHERE session_key = ?1 AND token = ?2
