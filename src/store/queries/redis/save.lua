-- KEYS[1]: the record's key, KEYS[2]: the index of due work (a sorted set of session
-- keys, scored by due time). ARGV: data, expected version ('' = no record), new
-- version, TTL in milliseconds ('0' = none), the session key, its due time in Unix
-- seconds ('' to take it out of the index). With KEYS[3] (a lease key) and ARGV[7] (the
-- holder's token): once written, the lease is deleted if it is still the holder's.
-- Returns 1 when written, 0 on a version mismatch (the lease is left alone then).
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
if KEYS[3] and redis.call('GET', KEYS[3]) == ARGV[7] then
    redis.call('DEL', KEYS[3])
end
return 1
