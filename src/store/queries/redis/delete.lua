-- KEYS[1]: the record's key, KEYS[2]: the index of due work. ARGV[1]: expected
-- version, ARGV[2]: the session key. With KEYS[3] (a lease key) and ARGV[3] (the
-- holder's token): once the record is gone, the lease is deleted if it is still the
-- holder's.
-- Returns 1 when the record is gone (deleted now or absent), 0 on a version mismatch
-- (the lease is left alone then).
local function release()
    if KEYS[3] and redis.call('GET', KEYS[3]) == ARGV[3] then
        redis.call('DEL', KEYS[3])
    end
end
local current = redis.call('HGET', KEYS[1], 'v')
if not current then
    redis.call('ZREM', KEYS[2], ARGV[2])
    release()
    return 1
end
if current ~= ARGV[1] then
    return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
release()
return 1
