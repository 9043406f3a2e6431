-- Redis Cluster: the index of due work is one sorted set per bucket. KEYS[1]: the
-- bucket's index. ARGV[1]: the prefix of the bucket's record keys (the store's prefix
-- and the bucket's hash tag), ARGV[2]: at most this many keys, ARGV[3]: now (Unix
-- seconds).
-- Returns {key, due, key, due, ...}: the bucket's session keys due by now, earliest
-- first, whose records exist, each with its due time (so that the caller can merge the
-- buckets in due order); members whose record expired meanwhile leave the index.
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
