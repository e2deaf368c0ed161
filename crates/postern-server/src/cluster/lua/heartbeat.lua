-- Refreshes relay ARGV[1]'s entry (value ARGV[3], for ARGV[2] ms). Returns 1 when the entry
-- was still there, 0 when it was gone (first start, expired, or the store lost its data): the
-- relay then asserts all its routes again.
local P = KEYS[1] -- the cluster's key prefix, {pst:<tag>}:
local relay, ttl, value = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local existed = redis.call('EXISTS', P .. 'node:' .. relay)
redis.call('SET', P .. 'node:' .. relay, value, 'PX', ttl)
redis.call('SADD', P .. 'relays', relay)
if existed == 0 then redis.call('PUBLISH', P .. 'events', 'node ' .. relay) end
return existed
