UPDATE `{table}` SET data = ?, version = ?, expires_at = ?, pending = ?
WHERE session_key = ? AND version = ? AND (expires_at IS NULL OR expires_at > ?)
