-- lease_acquire.lua: take one of a tenant's concurrency slots, shared by every replica.
--
-- Decides whether one more request of the tenant may run. The slots are a sorted set of
-- leases: member = lease id, score = the lease's expiry in ms since the Unix epoch on
-- Redis's clock (TIME). A lease whose replica died is not leaked: it expires and the next
-- acquire removes it before counting. A limit lowered by a reload refuses new leases until
-- enough running ones are released or expire; none is cut short.
--
-- KEYS[1]  sorted set of the tenant's leases, e.g. kqlgate:{tenant-a}:leases
-- ARGV[1]  limit: most leases held at once (integer >= 0)
-- ARGV[2]  lease id, unique per request (e.g. a UUID or replica-id:counter)
-- ARGV[3]  lease duration in ms (integer >= 1); renew with lease_renew.lua before it ends
--
-- Returns {acquired, count}:
--   {1, count_after}  the lease was added (count includes it). An id already in the set
--                     (a retried call whose first reply was lost) is refreshed and also
--                     answers 1: it holds its slot already.
--   {0, count}        refused: count live leases are held, count >= limit.
-- Writes: ZREMRANGEBYSCORE of expired leases (score <= now); on success ZADD now+duration
--   and PEXPIREAT of the set to its latest lease expiry (not simply now+duration: a short
--   lease must not shorten the key's life under a longer one).

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local limit = tonumber(ARGV[1])
local id = ARGV[2]
local duration = tonumber(ARGV[3])
if not limit or limit < 0 then
  return redis.error_reply('ERR lease_acquire: limit must be a number >= 0')
end
if not id or id == '' then
  return redis.error_reply('ERR lease_acquire: lease id is empty')
end
if not duration or duration < 1 then
  return redis.error_reply('ERR lease_acquire: duration_ms must be >= 1')
end
local expiry = now + math.floor(duration)

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)

local held = redis.call('ZSCORE', KEYS[1], id)
local count = redis.call('ZCARD', KEYS[1])
if not held then
  if count >= limit then
    return {0, count}
  end
  count = count + 1
end
redis.call('ZADD', KEYS[1], expiry, id)

local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], string.format('%d', math.ceil(tonumber(last[2]))))
return {1, count}
