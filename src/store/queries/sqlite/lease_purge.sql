DELETE FROM "{lease_table}" WHERE expires_at <= ?1
