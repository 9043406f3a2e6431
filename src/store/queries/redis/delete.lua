-- KEYS[1]: the record's key, KEYS[2]: the index of due work. ARGV[1]: expected
-- version, ARGV[2]: the session key.
-- Returns 1 when the record is gone (deleted now or absent), 0 on a version mismatch.
local current = redis.call('HGET', KEYS[1], 'v')
if not current then
    redis.call('ZREM', KEYS[2], ARGV[2])
    return 1
end
if current ~= ARGV[1] then
    return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
