ALTER TABLE `{table}` ADD COLUMN due_at BIGINT NULL, ADD INDEX due_idx (due_at)
