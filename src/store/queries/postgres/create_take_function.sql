CREATE OR REPLACE FUNCTION "{routine}_take_v1"(k text, t text, ttl bigint)
RETURNS TABLE (o_taken boolean, o_data bytea, o_version bigint, o_expires_at bigint)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $fn$
BEGIN
    -- Takes the lease of k for ttl ms if it is free or expired, then reads the record.
    -- Each statement has a snapshot of its own: the read sees the save of the holder
    -- the take may have waited for (released in the same transaction as its save),
    -- with no row lock (a row lock would be a durable write).
    INSERT INTO "{lease_table}" AS l (session_key, token, expires_at)
    VALUES (k, t, (extract(epoch FROM clock_timestamp()) * 1000)::bigint + ttl)
    ON CONFLICT (session_key) DO UPDATE
        SET token = EXCLUDED.token, expires_at = EXCLUDED.expires_at
        WHERE l.expires_at <= (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, NULL::bytea, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    RETURN QUERY SELECT true, s.data, s.version, s.expires_at
        FROM "{table}" AS s WHERE s.session_key = k;
    IF NOT FOUND THEN
        RETURN QUERY SELECT true, NULL::bytea, NULL::bigint, NULL::bigint;
    END IF;
END
$fn$
