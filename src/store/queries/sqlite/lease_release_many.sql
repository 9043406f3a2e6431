WITH v(k, t) AS (VALUES {rows})
DELETE FROM "{lease_table}"
WHERE session_key IN (SELECT k FROM v) AND (session_key, token) IN (SELECT k, t FROM v)
RETURNING token
