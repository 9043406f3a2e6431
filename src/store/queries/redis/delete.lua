-- KEYS[1]: the record's key. ARGV[1]: expected version.
-- Returns 1 when the record is gone (deleted now or absent), 0 on a version mismatch.
local current = redis.call('HGET', KEYS[1], 'v')
if not current then
    return 1
end
if current ~= ARGV[1] then
    return 0
end
redis.call('DEL', KEYS[1])
return 1
