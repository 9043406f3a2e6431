SELECT o_taken, o_data, o_version, o_expires_at FROM "{routine}_take_v1"($1, $2, $3)
