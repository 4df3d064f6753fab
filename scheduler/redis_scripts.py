"""The Lua scripts of ``scheduler.redis_store.RedisStore``: each runs atomically on the server.

They are what lets head replicas share a coop's quota without overshooting it: a reservation
checks used + reserved + cost against the limit and holds the cost in one step. Amounts are
integers in millionths (``scheduler.ledger.Cost``). Each script says its KEYS and ARGV.
"""

from __future__ import annotations

LUA_PRELUDE = """
local function neg(s)
  if s == '0' then return '0' end
  if string.sub(s, 1, 1) == '-' then return string.sub(s, 2) end
  return '-' .. s
end
local dims = {'cpu', 'gpu', 'credits'}
"""

# The Redis server's clock, read before any write: ``now`` in seconds, and ``now_text``, its exact text
# (seconds.microseconds) as a reservation keeps it. Every head replica reads this one clock, so how long a
# reservation has been held does not depend on the clock of the head that asks. (A script may write after
# reading TIME when it replicates its effects, not itself: before Redis 5 it must ask, since 5 that is the
# default, since 7 the only way.)
SERVER_NOW = """
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now_text = clock[1] .. '.' .. string.format('%06d', tonumber(clock[2]))
local now = tonumber(now_text)
"""

# KEYS: reservation, settled, usage, reservation index, usage index
# ARGV: task, coop, member, period, cpu, gpu, credits, limited (1/0), limit cpu, gpu, credits
# The reservation keeps when it was made (``reserved_at``, the server's clock): RELEASE_ORPHANED reads it.
RESERVE = LUA_PRELUDE + SERVER_NOW + """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 'duplicate' end
if ARGV[8] == '1' then
  for i, d in ipairs(dims) do
    local limit, cost = tonumber(ARGV[8 + i]), tonumber(ARGV[4 + i])
    if limit >= 0 and cost > 0 then  -- as ledger.fits: a dimension the task does not use is not checked
      local used = tonumber(redis.call('HGET', KEYS[3], d) or '0')
      local held = tonumber(redis.call('HGET', KEYS[3], 'reserved_' .. d) or '0')
      if used + held + cost > limit then return 'over_limit' end
    end
  end
end
redis.call('HSET', KEYS[1], 'coop', ARGV[2], 'member', ARGV[3], 'period', ARGV[4],
           'cpu', ARGV[5], 'gpu', ARGV[6], 'credits', ARGV[7], 'usage_key', KEYS[3], 'reserved_at', now_text)
redis.call('HSET', KEYS[3], 'coop', ARGV[2], 'member', ARGV[3], 'period', ARGV[4])
for i, d in ipairs(dims) do redis.call('HINCRBY', KEYS[3], 'reserved_' .. d, ARGV[4 + i]) end
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('SADD', KEYS[5], KEYS[3])
return 'reserved'
"""

# KEYS: reservation index, settled index, usage index, then per item: reservation, settled, usage
# ARGV per item: task, coop, member, period, cpu, gpu, credits, retry (1 = usage is a reservation's key)
# Answers per item: 1 (settled), 0 (already settled), the reservation's usage key (retry with it)
# or -1 (a retry found the reservation released: settle in the given period).
SETTLE = LUA_PRELUDE + """
local answers = {}
for n = 0, (#KEYS - 3) / 3 - 1 do
  local held_key, settled_key, usage_key = KEYS[4 + 3 * n], KEYS[5 + 3 * n], KEYS[6 + 3 * n]
  local task, coop, member, period = ARGV[1 + 8 * n], ARGV[2 + 8 * n], ARGV[3 + 8 * n], ARGV[4 + 8 * n]
  local cost = {ARGV[5 + 8 * n], ARGV[6 + 8 * n], ARGV[7 + 8 * n]}
  local answer = 1
  if redis.call('EXISTS', settled_key) == 1 then
    answer = 0
  else
    local held = redis.call('HMGET', held_key, 'usage_key', 'coop', 'member', 'period', 'cpu', 'gpu', 'credits')
    if held[1] and held[1] ~= usage_key then
      answer = held[1]
    elseif not held[1] and ARGV[8 + 8 * n] == '1' then
      answer = -1
    else
      if held[1] then
        coop, member, period = held[2], held[3], held[4]
        for i, d in ipairs(dims) do redis.call('HINCRBY', usage_key, 'reserved_' .. d, neg(held[4 + i])) end
        redis.call('DEL', held_key)
        redis.call('SREM', KEYS[1], task)
      else
        redis.call('HSET', usage_key, 'coop', coop, 'member', member, 'period', period)
      end
      for i, d in ipairs(dims) do redis.call('HINCRBY', usage_key, d, cost[i]) end
      redis.call('HINCRBY', usage_key, 'completed', 1)
      redis.call('HSET', settled_key, 'coop', coop, 'member', member, 'period', period,
                 'cpu', cost[1], 'gpu', cost[2], 'credits', cost[3])
      redis.call('SADD', KEYS[2], task)
      redis.call('SADD', KEYS[3], usage_key)
    end
  end
  answers[n + 1] = answer
end
return answers
"""

# KEYS: reservation, usage, reservation index; ARGV: task
# Returns 1 (released), 0 (no reservation) or the reservation's usage key (retry with it).
RELEASE = LUA_PRELUDE + """
local held = redis.call('HMGET', KEYS[1], 'usage_key', 'cpu', 'gpu', 'credits')
if not held[1] then return 0 end
if held[1] ~= KEYS[2] then return held[1] end
for i, d in ipairs(dims) do redis.call('HINCRBY', KEYS[2], 'reserved_' .. d, neg(held[1 + i])) end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""

# KEYS: reservation index, unfinished jobs index (``create_job`` and ``put_job`` move a task in or out of it with
# its record, in one script or MULTI), then per item: reservation, usage (the reservation's usage key as read
# before the call)
# ARGV: grace (seconds), then per item: task
# Answers per item: 1 (released) or 0 (kept). A reservation is released only if, at this moment, it is still
# there under the usage key given, it was made at least ``grace`` seconds ago, and its task has no unfinished
# job record (none, or a finished one): a head that records the job before this runs keeps it, and one that
# records it after finds the reservation gone, never half of it. A reservation made before reservations kept
# their time gets one now (the first sweep that finds it unrecorded), so it goes ``grace`` later at the soonest.
RELEASE_ORPHANED = LUA_PRELUDE + SERVER_NOW + """
local grace = tonumber(ARGV[1])
local answers = {}
for n = 0, (#KEYS - 2) / 2 - 1 do
  local held_key, usage_key, task = KEYS[3 + 2 * n], KEYS[4 + 2 * n], ARGV[2 + n]
  local answer = 0
  local held = redis.call('HMGET', held_key, 'usage_key', 'reserved_at', 'cpu', 'gpu', 'credits')
  if held[1] == usage_key and redis.call('SISMEMBER', KEYS[2], task) == 0 then
    if not held[2] then
      redis.call('HSET', held_key, 'reserved_at', now_text)
    elseif now - tonumber(held[2]) >= grace then
      for i, d in ipairs(dims) do redis.call('HINCRBY', usage_key, 'reserved_' .. d, neg(held[2 + i])) end
      redis.call('DEL', held_key)
      redis.call('SREM', KEYS[1], task)
      answer = 1
    end
  end
  answers[n + 1] = answer
end
return answers
"""

# KEYS: job, submitted (zset), then each index set the record belongs in; ARGV: task, record (JSON), submitted_at
# Returns 1 (stored) or 0 (a record of the task is there: another head replica decided it first; nothing written).
# A job's first record (``RedisStore.create_job``): the check and the record with its indices in one step, so two
# replicas deciding one task id at once never both write, and the loser never overwrites the winner's decision.
CREATE_JOB = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
for i = 3, #KEYS do redis.call('SADD', KEYS[i], ARGV[1]) end
return 1
"""

# KEYS: versions, counter, active; ARGV: coop, version body (JSON), removal (1/0)
# Returns the new version, or 0 for a removal when no policy is active.
PUT_POLICY = """
if ARGV[3] == '1' and redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then return 0 end
local v = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], v, ARGV[2])
if ARGV[3] == '1' then redis.call('HDEL', KEYS[3], ARGV[1]) else redis.call('HSET', KEYS[3], ARGV[1], v) end
return v
"""

# KEYS: reports of the task, all, unforwarded, counter; ARGV: attempt, report (JSON), index member
PUT_REPORT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local n = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[2], n, ARGV[3])
redis.call('ZADD', KEYS[3], n, ARGV[3])
return 1
"""

# KEYS: counter, log, all, coop list; ARGV: entry (JSON)
LOG_CHANGE = """
local n = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], n, ARGV[1])
redis.call('RPUSH', KEYS[3], n)
redis.call('RPUSH', KEYS[4], n)
return n
"""

# KEYS: the session's audit counter, the session's audit index (seq_no zset)
# The counter starts from the highest stored seq_no (records written before it existed), then only grows:
# a number deleted records had is not given again.
NEXT_AUDIT_SEQ = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  local top = redis.call('ZREVRANGE', KEYS[2], 0, 0)
  redis.call('SET', KEYS[1], top[1] or '-1')
end
return redis.call('INCR', KEYS[1])
"""

# Rate-limit token buckets shared by head replicas (``scheduler.store_rate_buckets``): a hash of ``tokens`` and
# ``last`` (when they were counted, the server's clock), refilled at ``rate`` per second up to ``burst``, as
# ``policies.rules.RateBuckets`` does in memory. A bucket not seen yet is full.
_BUCKET = """
local b = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tokens, last = tonumber(b[1]), tonumber(b[2])
if tokens == nil or last == nil then tokens, last = burst, now end
local refilled = math.min(burst, tokens + math.max(0, now - last) * rate)
"""

# KEYS: bucket. ARGV: rate, burst. The tokens it holds now (read only).
RATE_AVAILABLE = SERVER_NOW + _BUCKET + """
return string.format('%.17g', refilled)
"""

# KEYS: bucket. ARGV: rate, burst, seconds to keep an idle bucket (by then it is full again). Takes one token
# (an empty bucket stays at 0: no debt, as in memory); returns what is left.
RATE_TAKE = SERVER_NOW + _BUCKET + """
local left = math.max(0, refilled - 1)
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', left), 'last', string.format('%.17g', math.max(last, now)))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return string.format('%.17g', left)
"""
