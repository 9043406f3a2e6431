UPDATE "{lease_table}"
SET expires_at = (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $3
WHERE session_key = $1 AND token = $2
    AND expires_at > (extract(epoch FROM clock_timestamp()) * 1000)::bigint
