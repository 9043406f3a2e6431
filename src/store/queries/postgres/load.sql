SELECT data, version, expires_at FROM "{table}" WHERE session_key = $1
