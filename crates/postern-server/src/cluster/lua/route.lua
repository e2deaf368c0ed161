-- Sets how many members relay ARGV[1] has for each of n names, checking ownership first.
-- One round trip for a whole Hello; nothing is written unless every name is granted.
--
-- ARGV: relay, lease_ms, token, max_tunnels (0: none), n, then n groups of
--       name, count, owner, group, share (0/1), instance, local_port, kind, url, lease_key,
--       counts (1: the tunnel's own name, which its token's max_tunnels counts; 0: an alias)
-- Returns {'ok'}, {'taken', name} or {'quota', max}.
local P = KEYS[1] -- the cluster's key prefix, {pst:<tag>}:
local relay, lease_ms, token, max_tunnels, n = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local W = 11
local grown = 0
for i = 0, n - 1 do
  local b = 6 + i * W
  local name, count, owner, group, share = ARGV[b], tonumber(ARGV[b + 1]), ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local rt = P .. 'rt:' .. name
  local mine = tonumber(redis.call('HGET', rt, relay) or '0')
  if count > 0 and mine == 0 then
    local o = redis.call('HMGET', P .. 'own:' .. name, 'owner', 'group', 'share')
    if o[1] and o[1] ~= owner then return {'taken', name} end
    if o[1] and redis.call('HLEN', rt) > 0 and o[2] ~= group and not (o[3] == '1' and share == '1') then
      return {'taken', name}
    end
    if redis.call('HLEN', rt) == 0 and ARGV[b + 10] == '1' then grown = grown + 1 end
  end
end
if max_tunnels > 0 and token ~= '' and grown > 0 then
  local used = tonumber(redis.call('GET', P .. 'quota:' .. token) or '0')
  if used + grown > max_tunnels then return {'quota', tostring(max_tunnels)} end
end
for i = 0, n - 1 do
  local b = 6 + i * W
  local name, count = ARGV[b], tonumber(ARGV[b + 1])
  local rt, own = P .. 'rt:' .. name, P .. 'own:' .. name
  local lease_key = ARGV[b + 9]
  local counted = ''
  if ARGV[b + 10] == '1' then counted = token end
  local before = redis.call('HLEN', rt)
  if count > 0 then
    redis.call('HSET', own, 'owner', ARGV[b + 2], 'group', ARGV[b + 3], 'share', ARGV[b + 4], 'instance', ARGV[b + 5],
      'local_port', ARGV[b + 6], 'kind', ARGV[b + 7], 'url', ARGV[b + 8], 'token', counted, 'lease', lease_key)
    redis.call('PERSIST', own)
    if lease_key ~= '' then
      redis.call('SET', lease_key, string.match(name, '%d+$') or '')
    end
    redis.call('HSET', rt, relay, count)
    redis.call('SADD', P .. 'names:' .. relay, name)
    redis.call('SADD', P .. 'names', name)
    if before == 0 and counted ~= '' then redis.call('INCR', P .. 'quota:' .. counted) end
  else
    redis.call('HDEL', rt, relay)
    redis.call('SREM', P .. 'names:' .. relay, name)
    if before > 0 and redis.call('HLEN', rt) == 0 then unrouted(P, name, lease_ms) end
  end
  redis.call('PUBLISH', P .. 'events', 'rt ' .. name)
end
return {'ok'}
