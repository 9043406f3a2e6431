DELETE FROM "{lease_table}" WHERE expires_at <= (extract(epoch FROM clock_timestamp()) * 1000)::bigint
