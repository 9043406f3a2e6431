DO $$
BEGIN
    -- A leases' table made by an earlier version is logged: its rows need not be.
    IF (SELECT relpersistence FROM pg_class WHERE oid = to_regclass('"{lease_table}"')) = 'p' THEN
        ALTER TABLE "{lease_table}" SET UNLOGGED;
    END IF;
END
$$
