SELECT COUNT(*) FROM information_schema.ROUTINES
WHERE ROUTINE_SCHEMA = DATABASE() AND ROUTINE_TYPE = 'PROCEDURE'
    AND ROUTINE_NAME IN ('{routine}_take_v1', '{routine}_save_v1')
