INSERT INTO `{table}` (session_key, data, version, expires_at, due_at) VALUES (?, ?, ?, ?, ?)
