SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = 'due_at'
