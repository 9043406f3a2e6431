-- KEYS[1]: the record's key, KEYS[2]: the index of due work (a sorted set of session
-- keys, scored by due time). ARGV: data, expected version ('' = no record), new
-- version, TTL in milliseconds ('0' = none), the session key, its due time in Unix
-- seconds ('' to take it out of the index).
-- Returns 1 when written, 0 on a version mismatch.
local current = redis.call('HGET', KEYS[1], 'v')
if (current or '') ~= ARGV[2] then
    return 0
end
redis.call('HSET', KEYS[1], 'd', ARGV[1], 'v', ARGV[3])
if ARGV[4] ~= '0' then
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
else
    redis.call('PERSIST', KEYS[1])
end
if ARGV[6] ~= '' then
    redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
else
    redis.call('ZREM', KEYS[2], ARGV[5])
end
return 1
