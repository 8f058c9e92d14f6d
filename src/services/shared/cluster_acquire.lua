-- cluster_acquire.lua: take one slot of a cluster-wide cap, with fair shares across tenants.
--
-- Decides whether one more query may run against a (Kusto) cluster whose concurrency every
-- replica and tenant shares. Leases are a sorted set, member "tenant|lease-id", score =
-- expiry in ms on Redis's clock (TIME). Beside it, a hash of live leases per tenant, kept by
-- this script and cluster_release.lua in the same atomic step as the set: expired leases
-- are pruned from the set and their counts taken off together, so a dead replica's leases
-- leave no count behind. The hash is checked against the set on every call (sum of counts
-- = live leases) and rebuilt from the set if they ever differ (eviction, a manual edit, a
-- lease removed by another script), so the set stays the one source of truth.
-- A third key, a sorted set of tenants refused recently ("waiting", score = until when),
-- carries demand that holds no lease yet; it expires the same way.
--
-- Rule (cap C; active = tenants holding leases, plus tenants waiting, plus the asking one):
--   1. total >= C                                                  -> refuse (full)
--   2. another tenant is waiting and the asking tenant holds >= C / active
--                                                                  -> refuse (over share)
--   3. otherwise                                                   -> admit
-- A refused tenant is recorded as waiting for `wait_window` ms (the caller queues briefly
-- and retries within that window). A tenant alone may use the whole cap; once another
-- tenant has been turned away, slots freed by releases go only to tenants below their
-- share, so a flooding tenant cannot win every freed slot back before the others retry.
--
-- KEYS[1]  sorted set of the cluster's leases,  e.g. kqlgate:{cluster-x}:leases
-- KEYS[2]  hash tenant -> live lease count,     e.g. kqlgate:{cluster-x}:counts
-- KEYS[3]  sorted set of waiting tenants,       e.g. kqlgate:{cluster-x}:waiting
--          (all three with the same {hash tag}: one Redis Cluster slot)
-- ARGV[1]  cap: most leases at once across all tenants (integer >= 0)
-- ARGV[2]  tenant id (non-empty, must not contain "|")
-- ARGV[3]  lease id, unique per request
-- ARGV[4]  lease duration in ms (integer >= 1). Renew with lease_renew.lua (KEYS = this
--          KEYS[1], KEYS[2]; member "tenant|lease-id"); release with cluster_release.lua
--          (not lease_release.lua, which would leave the count behind until the next
--          consistency check).
-- ARGV[5]  wait window in ms, optional (default 1000): how long a refused tenant counts as
--          waiting; make it longer than the caller's retry interval. 0 records no waiters
--          (then only rule 1 applies).
--
-- Returns {admitted, tenant_count, total, active_tenants}, integers, after the decision:
--   admitted        1 admitted (also when this member is held already: a retried call),
--                   0 refused: full if total >= cap, else over the tenant's fair share
--   tenant_count    the asking tenant's live leases, including the new one if admitted
--   total           live leases in the cluster, including the new one if admitted
--   active_tenants  tenants holding leases or waiting, plus the asking one
-- Cost: O(log n) per pruned lease + O(tenants) (no scan of the leases), except a rebuild
--   after an inconsistency, O(leases) once.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local cap = tonumber(ARGV[1])
local tenant = ARGV[2]
local lease = ARGV[3]
local duration = tonumber(ARGV[4])
local window = tonumber(ARGV[5] or '1000')
if not cap or cap < 0 then
  return redis.error_reply('ERR cluster_acquire: cap must be a number >= 0')
end
if not tenant or tenant == '' or string.find(tenant, '|', 1, true) then
  return redis.error_reply('ERR cluster_acquire: tenant must be non-empty without "|"')
end
if not lease or lease == '' then
  return redis.error_reply('ERR cluster_acquire: lease id is empty')
end
if not duration or duration < 1 then
  return redis.error_reply('ERR cluster_acquire: duration_ms must be >= 1')
end
if not window or window < 0 then
  return redis.error_reply('ERR cluster_acquire: wait_window_ms must be >= 0')
end
duration = math.floor(duration)
window = math.floor(window)

local leases, counts, waiting = KEYS[1], KEYS[2], KEYS[3]
local member = tenant .. '|' .. lease

local function tenant_of(m)
  local bar = string.find(m, '|', 1, true)
  if bar then
    return string.sub(m, 1, bar - 1)
  end
  return m
end

-- Both lease keys live as long as the latest lease; the waiting set as its latest waiter.
local function extend(key, companion)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    local at = string.format('%d', math.ceil(tonumber(last[2])))
    redis.call('PEXPIREAT', key, at)
    if companion then
      redis.call('PEXPIREAT', companion, at)
    end
  end
end

-- Prune expired leases together with their counts, and expired waiters.
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
if #expired > 0 then
  for i = 1, #expired do
    local t = tenant_of(expired[i])
    if redis.call('HINCRBY', counts, t, -1) <= 0 then
      redis.call('HDEL', counts, t)
    end
  end
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
end
redis.call('ZREMRANGEBYSCORE', waiting, '-inf', now)

-- The counts must add up to the set; if not, rebuild them from the set.
local total = redis.call('ZCARD', leases)
local sum = 0
local values = redis.call('HVALS', counts)
for i = 1, #values do
  sum = sum + (tonumber(values[i]) or 0)
end
if sum ~= total or (total == 0 and #values > 0) then
  redis.call('DEL', counts)
  if total > 0 then
    local tally = {}
    local all = redis.call('ZRANGE', leases, 0, -1)
    for i = 1, #all do
      local t = tenant_of(all[i])
      tally[t] = (tally[t] or 0) + 1
    end
    for t, c in pairs(tally) do
      redis.call('HSET', counts, t, c)
    end
    extend(leases, counts)
  end
end

local mine = tonumber(redis.call('HGET', counts, tenant)) or 0
local active = redis.call('HLEN', counts)
local others_waiting = false
local waiters = redis.call('ZRANGE', waiting, 0, -1)
for i = 1, #waiters do
  local t = waiters[i]
  if t ~= tenant then
    others_waiting = true
    if redis.call('HEXISTS', counts, t) == 0 then
      active = active + 1
    end
  end
end
if mine == 0 then
  active = active + 1 -- the asking tenant
end

-- A retried call whose first reply was lost: the lease is held already; refresh it.
if redis.call('ZSCORE', leases, member) then
  redis.call('ZADD', leases, now + duration, member)
  extend(leases, counts)
  return {1, mine, total, active}
end

local admit = total < cap and not (others_waiting and mine * active >= cap)
if admit then
  redis.call('ZADD', leases, now + duration, member)
  redis.call('HINCRBY', counts, tenant, 1)
  extend(leases, counts)
  return {1, mine + 1, total + 1, active}
end

-- Refused: record the tenant as waiting (rewritten only once half its window has passed,
-- so a queue of retries does not write on every call).
if window > 0 then
  local until_ms = tonumber(redis.call('ZSCORE', waiting, tenant))
  if not until_ms or until_ms < now + window / 2 then
    redis.call('ZADD', waiting, now + window, tenant)
    extend(waiting)
  end
end
return {0, mine, total, active}
