INSERT INTO `{lease_table}` (session_key, token, expires_at)
VALUES (?, ?, CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED) + ?)
