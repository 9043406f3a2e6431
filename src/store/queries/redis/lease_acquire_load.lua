-- KEYS[1]: the lease's key, KEYS[2]: the record's key. ARGV: token, TTL in milliseconds.
-- Takes the lease if it is free and then reads the record, in one round trip.
-- Returns {1, data, version} when taken (data and version nil when there is no record),
-- {0, nil, nil} when another holder has it.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    local r = redis.call('HMGET', KEYS[2], 'd', 'v')
    return {1, r[1], r[2]}
end
return {0, false, false}
