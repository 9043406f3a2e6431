SELECT version FROM "{table}" WHERE session_key = $1 AND (expires_at IS NULL OR expires_at > $2)
