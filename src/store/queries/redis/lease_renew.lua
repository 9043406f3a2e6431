-- KEYS[1]: the lease key. ARGV: the holder's token, TTL in milliseconds.
-- Returns 1 when the lease was still the holder's and now lasts TTL from now, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
