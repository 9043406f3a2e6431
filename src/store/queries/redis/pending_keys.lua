-- KEYS[1]: an index of due work (a sorted set scored by due time): the store's, or on
-- Redis Cluster one bucket's. ARGV[1]: the prefix of the index's record keys (the
-- store's prefix, and on a cluster the bucket's hash tag), ARGV[2]: at most this many
-- keys, ARGV[3]: now (Unix seconds).
-- Returns {key, due, key, due, ...}: the session keys due by now, earliest first, whose
-- records exist, each with its due time (so that a cluster's buckets can be merged in
-- due order); members whose record expired meanwhile (Redis dropped it by its TTL)
-- leave the index.
local out = {}
local found = 0
local limit = tonumber(ARGV[2])
local offset = 0
while found < limit do
    local page = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'WITHSCORES', 'LIMIT', offset, 256)
    if #page == 0 then
        break
    end
    for i = 1, #page, 2 do
        local key = page[i]
        if redis.call('EXISTS', ARGV[1] .. key) == 1 then
            out[#out + 1] = key
            out[#out + 1] = page[i + 1]
            found = found + 1
            offset = offset + 1
            if found >= limit then
                return out
            end
        else
            redis.call('ZREM', KEYS[1], key)
        end
    end
end
return out
