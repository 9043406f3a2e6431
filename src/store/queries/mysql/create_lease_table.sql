CREATE TABLE IF NOT EXISTS `{lease_table}` (
    session_key VARBINARY(1024) NOT NULL PRIMARY KEY,
    token VARCHAR(64) NOT NULL,
    expires_at BIGINT NOT NULL
) ENGINE = InnoDB
