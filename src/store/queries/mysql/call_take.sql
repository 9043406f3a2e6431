CALL `{routine}_take_v1`(?, ?, ?)
