-- Drops the routes of relay ARGV[1] if its entry has expired (it is dead); idempotent, and any
-- relay may run it. Names left with no route wait ARGV[2] ms for their owner (the lease).
-- Returns 1 when it reaped, 0 when the relay is alive.
local P = KEYS[1] -- the cluster's key prefix, {pst:<tag>}:
local dead, lease_ms = ARGV[1], tonumber(ARGV[2])
if redis.call('EXISTS', P .. 'node:' .. dead) == 1 then return 0 end
for _, name in ipairs(redis.call('SMEMBERS', P .. 'names:' .. dead)) do
  local rt, own = P .. 'rt:' .. name, P .. 'own:' .. name
  redis.call('HDEL', rt, dead)
  if redis.call('HLEN', rt) == 0 then
    redis.call('SREM', P .. 'names', name)
    redis.call('PEXPIRE', own, lease_ms)
    local lk = redis.call('HGET', own, 'lease')
    if lk and lk ~= '' then redis.call('PEXPIRE', lk, lease_ms) end
    local tk = redis.call('HGET', own, 'token')
    if tk and tk ~= '' and tonumber(redis.call('GET', P .. 'quota:' .. tk) or '0') > 0 then
      redis.call('DECR', P .. 'quota:' .. tk)
    end
  end
  redis.call('PUBLISH', P .. 'events', 'rt ' .. name)
end
redis.call('DEL', P .. 'names:' .. dead)
redis.call('SREM', P .. 'relays', dead)
redis.call('PUBLISH', P .. 'events', 'node ' .. dead)
return 1
