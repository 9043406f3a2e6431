WITH v(k, d, nv, e, ov, now, p) AS (VALUES {rows})
UPDATE "{table}" SET data = v.d, version = v.nv, expires_at = v.e, due_at = v.p FROM v
WHERE "{table}".session_key = v.k AND "{table}".version = v.ov
    AND ("{table}".expires_at IS NULL OR "{table}".expires_at > v.now)
RETURNING "{table}".session_key
