-- KEYS[1]: the lease key. ARGV[1]: the holder's token.
-- Deletes the lease only if it is still the holder's; returns 1 then, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
end
return 0
