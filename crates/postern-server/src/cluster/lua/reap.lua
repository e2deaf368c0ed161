-- Drops the routes of relay ARGV[1] if its entry has expired (it is dead); idempotent, and any
-- relay may run it. Names left with no route wait ARGV[2] ms for their owner (the lease).
-- Returns 1 when it reaped, 0 when the relay is alive.
local P = KEYS[1] -- the cluster's key prefix, {pst:<tag>}:
local dead, lease_ms = ARGV[1], tonumber(ARGV[2])
if redis.call('EXISTS', P .. 'node:' .. dead) == 1 then return 0 end
for _, name in ipairs(redis.call('SMEMBERS', P .. 'names:' .. dead)) do
  local rt = P .. 'rt:' .. name
  redis.call('HDEL', rt, dead)
  if redis.call('HLEN', rt) == 0 then unrouted(P, name, lease_ms) end
  redis.call('PUBLISH', P .. 'events', 'rt ' .. name)
end
redis.call('DEL', P .. 'names:' .. dead)
redis.call('SREM', P .. 'relays', dead)
redis.call('PUBLISH', P .. 'events', 'node ' .. dead)
return 1
