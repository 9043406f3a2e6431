SELECT version FROM `{table}` WHERE session_key = ? AND (expires_at IS NULL OR expires_at > ?)
