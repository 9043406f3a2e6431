UPDATE `{table}` SET due_at = 0 WHERE pending AND due_at IS NULL
