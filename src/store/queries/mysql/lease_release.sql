DELETE FROM `{lease_table}` WHERE session_key = ? AND token = ?
