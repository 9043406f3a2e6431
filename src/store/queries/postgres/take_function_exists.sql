SELECT to_regprocedure('"{routine}_take_v1"(text, text, bigint)') IS NOT NULL
