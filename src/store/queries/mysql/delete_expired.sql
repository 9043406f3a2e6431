DELETE FROM `{table}` WHERE session_key = ? AND expires_at IS NOT NULL AND expires_at <= ?
