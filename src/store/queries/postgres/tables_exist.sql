SELECT to_regclass('"{table}"') IS NOT NULL
    AND to_regclass('"{index}"') IS NOT NULL
    AND to_regclass('"{due_index}"') IS NOT NULL
    AND to_regclass('"{lease_table}"') IS NOT NULL
    AND coalesce((SELECT relpersistence = 'u' FROM pg_class
                  WHERE oid = to_regclass('"{lease_table}"')), false)
