INSERT INTO `{table}` (session_key, data, version, expires_at, pending) VALUES (?, ?, ?, ?, ?)
