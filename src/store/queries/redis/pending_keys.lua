-- KEYS[1]: the pending-replies index. ARGV[1]: the store's key prefix, ARGV[2]: at most
-- this many keys. Returns marked session keys whose records exist; members whose
-- record expired meanwhile (Redis dropped it by its TTL) leave the index.
local out = {}
local limit = tonumber(ARGV[2])
local cursor = '0'
repeat
    local page = redis.call('SSCAN', KEYS[1], cursor, 'COUNT', 256)
    cursor = page[1]
    for _, key in ipairs(page[2]) do
        if redis.call('EXISTS', ARGV[1] .. key) == 1 then
            out[#out + 1] = key
            if #out >= limit then
                return out
            end
        else
            redis.call('SREM', KEYS[1], key)
        end
    end
until cursor == '0'
return out
