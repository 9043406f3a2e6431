CREATE TABLE IF NOT EXISTS `{table}` (
    session_key VARBINARY(1024) NOT NULL PRIMARY KEY,
    data LONGBLOB NOT NULL,
    version BIGINT NOT NULL,
    expires_at BIGINT NULL,
    pending BOOLEAN NOT NULL DEFAULT FALSE,
    INDEX expires_at_idx (expires_at),
    INDEX pending_idx (pending)
) ENGINE = InnoDB
