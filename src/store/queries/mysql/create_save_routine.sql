CREATE PROCEDURE IF NOT EXISTS `{routine}_save_v1`(
    IN k VARBINARY(1024), IN d LONGBLOB, IN v BIGINT, IN exp_at BIGINT, IN due BIGINT,
    IN expected BIGINT, IN now_s BIGINT, IN t VARCHAR(64))
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
BEGIN
    -- The compare-and-set update of k over `expected` and, when it wrote, the release
    -- of the lease still held with token t: one transaction. One row: rows written.
    DECLARE written BIGINT DEFAULT 0;
    START TRANSACTION;
    UPDATE `{table}` SET data = d, version = v, expires_at = exp_at, due_at = due
    WHERE session_key = k AND version = expected AND (expires_at IS NULL OR expires_at > now_s);
    SET written = ROW_COUNT();
    IF written = 1 THEN
        DELETE FROM `{lease_table}` WHERE session_key = k AND token = t;
    END IF;
    COMMIT;
    SELECT written;
END
