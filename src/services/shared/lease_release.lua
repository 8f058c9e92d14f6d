-- lease_release.lua: give a lease back when its request ends.
--
-- Decides nothing: removes the member, so the slot is free for the next acquire at once
-- (without waiting for the lease to expire). For a tenant's lease set; a cluster's lease
-- is released with cluster_release.lua, which also takes it off the tenant's count.
-- Releasing twice, or after expiry, is harmless (returns 0).
-- The set's key expiry is left as it is: it never ends before the remaining leases, and an
-- empty set is deleted by Redis itself.
--
-- KEYS[1]  the tenant's sorted set of leases, e.g. kqlgate:{tenant-a}:leases
-- ARGV[1]  the lease id
--
-- Returns the number of members removed: 1 if the lease was held, 0 if it was already gone.

return redis.call('ZREM', KEYS[1], ARGV[1])
