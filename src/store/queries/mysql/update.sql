UPDATE `{table}` SET data = ?, version = ?, expires_at = ?, due_at = ?
WHERE session_key = ? AND version = ? AND (expires_at IS NULL OR expires_at > ?)
