CREATE TABLE IF NOT EXISTS `{table}` (
    session_key VARBINARY(1024) NOT NULL PRIMARY KEY,
    data LONGBLOB NOT NULL,
    version BIGINT NOT NULL,
    expires_at BIGINT NULL,
    due_at BIGINT NULL,
    INDEX expires_at_idx (expires_at),
    INDEX due_idx (due_at)
) ENGINE = InnoDB
