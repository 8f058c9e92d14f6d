-- lease_renew.lua: extend one lease (tenant concurrency, or cluster cap) that is still held.
--
-- Decides whether a running request still holds its lease, and if so moves its expiry to
-- now + duration (Redis's clock). A lease whose expiry has passed is gone, whether or not
-- an acquire has pruned it yet: its slot may already have been given away, so the caller
-- must stop assuming it has one (and acquire again if it still needs one). This script
-- removes nothing: pruning is the acquire scripts' job (cluster_acquire.lua keeps counts
-- beside its set that a removal here would bypass).
--
-- KEYS[1]  the sorted set of leases (kqlgate:{tenant-a}:leases, or a cluster's lease set)
-- KEYS[2]  optional: a key that must live as long as the set, given the same expiry: the
--          cluster's counts hash (kqlgate:{cluster-x}:counts). Without it a cluster's counts
--          may expire before long-renewed leases and are then rebuilt once by the next
--          cluster_acquire.lua (correct, but O(leases) for that call).
-- ARGV[1]  the member: the lease id (tenant set) or "tenant|lease-id" (cluster set)
-- ARGV[2]  new duration in ms from now (integer >= 1)
--
-- Returns 1 if renewed; 0 if the lease was gone (expired, released, or never acquired).
-- Writes (when renewed): ZADD XX now+duration; PEXPIREAT of the set (and KEYS[2]) to the
--   set's latest lease expiry.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local id = ARGV[1]
local duration = tonumber(ARGV[2])
if not id or id == '' then
  return redis.error_reply('ERR lease_renew: lease id is empty')
end
if not duration or duration < 1 then
  return redis.error_reply('ERR lease_renew: duration_ms must be >= 1')
end

local expiry = tonumber(redis.call('ZSCORE', KEYS[1], id))
if not expiry or expiry <= now then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', now + math.floor(duration), id)

local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local at = string.format('%d', math.ceil(tonumber(last[2])))
redis.call('PEXPIREAT', KEYS[1], at)
if KEYS[2] then
  redis.call('PEXPIREAT', KEYS[2], at)
end
return 1
