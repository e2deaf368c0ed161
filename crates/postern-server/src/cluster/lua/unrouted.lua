-- Shared by route.lua and reap.lua (prepended to each when the scripts are built, store.rs):
-- name `name` has just lost its last route. It leaves the set of routed names, its ownership
-- (and its TCP port's lease) waits `lease_ms` for the owner to come back, and it stops counting
-- against its token's max_tunnels.
local function unrouted(P, name, lease_ms)
  local own = P .. 'own:' .. name
  redis.call('SREM', P .. 'names', name)
  redis.call('PEXPIRE', own, lease_ms)
  local lk = redis.call('HGET', own, 'lease')
  if lk and lk ~= '' then redis.call('PEXPIRE', lk, lease_ms) end
  local tk = redis.call('HGET', own, 'token')
  if tk and tk ~= '' and tonumber(redis.call('GET', P .. 'quota:' .. tk) or '0') > 0 then
    redis.call('DECR', P .. 'quota:' .. tk)
  end
end
