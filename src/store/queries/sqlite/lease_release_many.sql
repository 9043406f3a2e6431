DELETE FROM "{lease_table}" WHERE (session_key, token) IN (VALUES {rows})
RETURNING token
