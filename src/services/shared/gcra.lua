-- gcra.lua: one rate decision for one bucket (GCRA), on Redis's own clock.
--
-- Decides whether `cost` tokens can be taken from a token bucket now. The bucket is one
-- number, its theoretical arrival time (TAT) in microseconds since the Unix epoch as read
-- from Redis's TIME, so every replica sharing the key shares one limit and no replica's
-- clock matters. It is the algorithm of src/services/limits.rs (`decide`): with emission
-- interval I and burst B the tolerance is B*I; a request at `now` moves the TAT to
-- max(TAT, now) + cost*I and fits if that is at most now + B*I. A full bucket (or a
-- missing key) holds B tokens; a changed rate or burst applies at once, without a refill.
--
-- This one script also serves the sign-in failure budgets (no separate budget.lua):
-- peek = cost 0, spend = cost 1 with mode "spend".
--
-- KEYS[1]  the bucket's TAT key, e.g. kqlgate:{tenant-a}:rate (a string holding an integer)
-- ARGV[1]  emission interval in microseconds, 1e6 / (requests per second); rounded to an
--          integer, at least 1
-- ARGV[2]  burst in tokens (integer >= 0; 0 refuses everything)
-- ARGV[3]  cost in tokens: 1 normally; 0 = peek: would one token be allowed? Writes nothing.
--          A cost above the burst never fits.
-- ARGV[4]  mode, optional: "take" (default) takes the cost only if it fits;
--          "spend" always moves the TAT by the cost, even past the limit (a failed sign-in
--          happened whether or not budget was left).
--
-- Returns {allowed, wait_us}, both integers:
--   take/peek: allowed = 1 if the cost fits (take: and it was taken), else 0;
--              wait_us = 0 when allowed, else microseconds until this cost would fit
--              (for cost 1 and peek: until one token is back).
--   spend:     allowed = 1 if the spent cost was within the budget, 0 if it went past it;
--              wait_us = microseconds from now until a peek would be allowed again
--              (0 if one token is still left after this spend).
-- Writes (take when allowed, spend always): SET KEYS[1] to the new TAT with PX = the time
--   until the bucket is full again (TAT - now, rounded up to whole ms, at least 1 ms), so
--   idle tenants' keys vanish. Refusals and peeks write nothing.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local mode = ARGV[4] or 'take'
if not interval or interval <= 0 then
  return redis.error_reply('ERR gcra: interval_us must be a positive number')
end
if not burst or burst < 0 or burst ~= math.floor(burst) then
  return redis.error_reply('ERR gcra: burst must be an integer >= 0')
end
if not cost or cost < 0 or cost ~= math.floor(cost) then
  return redis.error_reply('ERR gcra: cost must be an integer >= 0')
end
if mode ~= 'take' and mode ~= 'spend' then
  return redis.error_reply('ERR gcra: mode must be "take" or "spend"')
end
-- Whole microseconds keep every value an exact integer in a Lua double (2^53 us is
-- about 285 years).
interval = math.max(1, math.floor(interval + 0.5))
local tolerance = interval * burst

-- A missing (or unreadable) TAT is a full bucket.
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end

if cost == 0 then
  local wait = tat + interval - now - tolerance
  if wait > 0 then
    return {0, wait}
  end
  return {1, 0}
end

local new_tat = tat + cost * interval
local over = new_tat - now - tolerance
if over > 0 and mode == 'take' then
  return {0, over}
end

local ttl_ms = math.max(1, math.ceil((new_tat - now) / 1000))
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl_ms)

if mode == 'spend' then
  local wait = new_tat + interval - now - tolerance
  if wait < 0 then
    wait = 0
  end
  if over > 0 then
    return {0, wait}
  end
  return {1, wait}
end
return {1, 0}
