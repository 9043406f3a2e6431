CREATE PROCEDURE IF NOT EXISTS `{routine}_take_v1`(
    IN k VARBINARY(1024), IN t VARCHAR(64), IN ttl BIGINT)
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
BEGIN
    -- Takes the lease of k for ttl ms if it is free or expired, then reads the record.
    -- One row: taken (0 or 1), and the record (NULLs when not taken or absent).
    DECLARE now_ms BIGINT DEFAULT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED);
    DECLARE holder VARCHAR(64) DEFAULT NULL;
    -- (READ COMMITTED for the take: no gap locks between takes of different keys.)
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    INSERT INTO `{lease_table}` (session_key, token, expires_at) VALUES (k, t, now_ms + ttl)
    ON DUPLICATE KEY UPDATE
        token = IF(expires_at <= now_ms, t, token),
        expires_at = IF(expires_at <= now_ms, now_ms + ttl, expires_at);
    SELECT token INTO holder FROM `{lease_table}` WHERE session_key = k;
    SELECT CAST(holder <=> t AS SIGNED) AS taken, s.data, s.version, s.expires_at
    FROM (SELECT 1) AS one
    LEFT JOIN `{table}` AS s ON s.session_key = k AND holder <=> t;
END
