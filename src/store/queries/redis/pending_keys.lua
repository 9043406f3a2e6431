-- KEYS[1]: the index of due work (a sorted set scored by due time). ARGV[1]: the
-- store's key prefix, ARGV[2]: at most this many keys, ARGV[3]: now (Unix seconds).
-- Returns the session keys due by now, earliest first, whose records exist; members
-- whose record expired meanwhile (Redis dropped it by its TTL) leave the index.
local out = {}
local limit = tonumber(ARGV[2])
local offset = 0
while #out < limit do
    local page = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'LIMIT', offset, 256)
    if #page == 0 then
        break
    end
    for _, key in ipairs(page) do
        if redis.call('EXISTS', ARGV[1] .. key) == 1 then
            out[#out + 1] = key
            offset = offset + 1
            if #out >= limit then
                return out
            end
        else
            redis.call('ZREM', KEYS[1], key)
        end
    end
end
return out
