CREATE PROCEDURE IF NOT EXISTS `{routine}_save_v1`(
    IN k VARBINARY(1024), IN d LONGBLOB, IN v BIGINT, IN exp_at BIGINT, IN due BIGINT,
    IN expected BIGINT, IN now_s BIGINT, IN t VARCHAR(64))
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
BEGIN
    -- The compare-and-set save of k over `expected` (NULL: a new record, inserted over
    -- an expired row only) and, when it wrote, the release of the lease still held
    -- with token t: one transaction, in READ COMMITTED (no gap locks, so saves of
    -- different keys do not deadlock). One row: 1 when written, 0 on a conflict. An
    -- error rolls the transaction back before it is raised.
    DECLARE written BIGINT DEFAULT 0;
    DECLARE duplicate INT DEFAULT 0;
    DECLARE CONTINUE HANDLER FOR 1062 SET duplicate = 1;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        ROLLBACK;
        RESIGNAL;
    END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    IF expected IS NULL THEN
        INSERT INTO `{table}` (session_key, data, version, expires_at, due_at)
        VALUES (k, d, v, exp_at, due);
        IF duplicate = 1 THEN
            -- A row is in the way: replaced only if it expired.
            DELETE FROM `{table}`
            WHERE session_key = k AND expires_at IS NOT NULL AND expires_at <= now_s;
            IF ROW_COUNT() = 1 THEN
                SET duplicate = 0;
                INSERT INTO `{table}` (session_key, data, version, expires_at, due_at)
                VALUES (k, d, v, exp_at, due);
            END IF;
        END IF;
        SET written = 1 - duplicate;
    ELSE
        UPDATE `{table}` SET data = d, version = v, expires_at = exp_at, due_at = due
        WHERE session_key = k AND version = expected
            AND (expires_at IS NULL OR expires_at > now_s);
        SET written = ROW_COUNT();
    END IF;
    IF written = 1 THEN
        DELETE FROM `{lease_table}` WHERE session_key = k AND token = t;
    END IF;
    COMMIT;
    SELECT written;
END
