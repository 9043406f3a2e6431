SELECT session_key, data, version, expires_at FROM "{table}" WHERE session_key IN ({rows})
