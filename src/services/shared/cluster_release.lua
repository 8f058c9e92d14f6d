-- cluster_release.lua: give a cluster lease back when its query ends.
--
-- Decides nothing: removes the lease from the cluster's set and takes it off its tenant's
-- count in the same atomic step (see cluster_acquire.lua), so the slot is free at once.
-- Releasing twice, or after the lease expired and was pruned, removes nothing and changes
-- no count.
--
-- KEYS[1]  sorted set of the cluster's leases, e.g. kqlgate:{cluster-x}:leases
-- KEYS[2]  hash tenant -> live lease count,    e.g. kqlgate:{cluster-x}:counts
-- ARGV[1]  tenant id
-- ARGV[2]  lease id (the member is "tenant|lease-id")
--
-- Returns the number of leases removed: 1 if it was held, 0 if it was already gone.

local removed = redis.call('ZREM', KEYS[1], ARGV[1] .. '|' .. ARGV[2])
if removed == 1 and redis.call('HINCRBY', KEYS[2], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return removed
