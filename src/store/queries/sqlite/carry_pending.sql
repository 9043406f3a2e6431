UPDATE "{table}" SET due_at = 0 WHERE pending = 1 AND due_at IS NULL
