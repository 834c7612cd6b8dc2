"""The Lua scripts of the Redis queue: each multi-key step runs as one script, so Redis applies
it whole or not at all and no other client sees it half done. ARGV[1] is the key prefix.

Times arrive as the strings Python made of its floats and are stored as given (Lua's own
number-to-string conversion would round them to 14 digits). Records go back packed with
msgpack, one bulk string per reply: redis-py's pure-Python parser spends more on a reply of a
few hundred small strings than Redis spends running the script."""

from __future__ import annotations

COMMON = r"""
local P = ARGV[1]
local GROUP = 'stratus'
local DONE = {succeeded = true, failed = true, cancelled = true}
local function ikey(id) return P .. ':inv:' .. id end
local function skey(ns, dep, prio) return P .. ':stream:' .. ns .. ':' .. dep .. ':' .. prio end
local function prios_key(ns, dep) return P .. ':prios:' .. ns .. ':' .. dep end
local function delayed_key(ns, dep) return P .. ':delayed:' .. ns .. ':' .. dep end
local function dlq_key(ns, dep) return P .. ':dlq:' .. ns .. ':' .. dep end

-- A QUEUED invocation waits in its priority's stream once due, in the delayed set before.
local function place(id, ns, dep, prio, not_before, now)
  if tonumber(not_before) > tonumber(now) then
    redis.call('ZADD', delayed_key(ns, dep), not_before, id)
    return
  end
  local s = skey(ns, dep, prio)
  if redis.call('EXISTS', s) == 0 then
    redis.call('XGROUP', 'CREATE', s, GROUP, '0', 'MKSTREAM')
  end
  local entry = redis.call('XADD', s, '*', 'id', id)
  redis.call('ZADD', prios_key(ns, dep), prio, prio)
  redis.call('HSET', ikey(id), 'entry', entry, 'stream', s)
end

-- Out of its stream (acknowledged and deleted), the delayed set and the lease set.
local function unplace(id, ns, dep)
  local k = ikey(id)
  local s, entry = unpack(redis.call('HMGET', k, 'stream', 'entry'))
  if s and entry then
    redis.call('XACK', s, GROUP, entry)
    redis.call('XDEL', s, entry)
    redis.call('HDEL', k, 'stream', 'entry')
  end
  redis.call('ZREM', delayed_key(ns, dep), id)
  redis.call('ZREM', P .. ':leases', id)
end

-- The status, and the indexes that follow it: the queued count, the expiry set (QUEUED
-- only), the finished and dead sets that purge and redrive read.
local function set_status(id, ns, dep, old, new, now)
  local k = ikey(id)
  local field = ns .. '\0' .. dep
  if old == 'queued' then
    if redis.call('HINCRBY', P .. ':pending', field, -1) <= 0 then
      redis.call('HDEL', P .. ':pending', field)
    end
    redis.call('ZREM', P .. ':expiry', id)
  elseif old == 'dead' then
    redis.call('ZREM', P .. ':dead', id)
    redis.call('ZREM', dlq_key(ns, dep), id)
  elseif DONE[old] then
    redis.call('ZREM', P .. ':done', id)
  end
  if new == 'queued' then
    redis.call('HINCRBY', P .. ':pending', field, 1)
    redis.call('ZADD', P .. ':expiry', redis.call('HGET', k, 'expires_at'), id)
  elseif new == 'dead' then
    redis.call('ZADD', P .. ':dead', now, id)
    redis.call('ZADD', dlq_key(ns, dep), now, id)
  elseif DONE[new] then
    redis.call('ZADD', P .. ':done', now, id)
  end
  redis.call('HSET', k, 'status', new)
end
"""

# ARGV: P, now, window_start, id, namespace, deployment, key ('' for none), lease_until
# ('' unless running), then the record's fields as name, value pairs.
ENQUEUE = COMMON + r"""
local now, window_start, id, ns, dep, key, lease_until =
  ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local k = ikey(id)
if redis.call('EXISTS', k) == 1 then return {2} end
if key ~= '' then
  local ik = P .. ':idem:' .. ns .. ':' .. key
  local first = redis.call('GET', ik)
  if first then
    local created = redis.call('HGET', ikey(first), 'created_at')
    if created and tonumber(created) >= tonumber(window_start) then
      return {0, cmsgpack.pack(redis.call('HGETALL', ikey(first)))}
    end
    if created then redis.call('HDEL', ikey(first), 'idempotency_key') end
  end
  redis.call('SET', ik, id)
end
local seq = redis.call('INCR', P .. ':seq')
redis.call('HSET', k, 'seq', seq, unpack(ARGV, 9))
redis.call('ZADD', P .. ':list:' .. ns, seq, id)
redis.call('ZADD', P .. ':listdep:' .. ns .. ':' .. dep, seq, id)
local status, prio, not_before = unpack(redis.call('HMGET', k, 'status', 'priority', 'not_before'))
if status == 'queued' then
  set_status(id, ns, dep, nil, 'queued', now)
  place(id, ns, dep, prio, not_before, now)
else
  redis.call('ZADD', P .. ':leases', lease_until, id)
end
return {1}
"""

# ARGV: P, namespace, deployment, owner, limit, now, lease_until
CLAIM = COMMON + r"""
local ns, dep, owner, limit, now, lease_until =
  ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7]
local dk = delayed_key(ns, dep)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', dk, '-inf', now)) do
  redis.call('ZREM', dk, id)
  local status, prio = unpack(redis.call('HMGET', ikey(id), 'status', 'priority'))
  if status == 'queued' then place(id, ns, dep, prio, '0', now) end
end
local out = {}
local pk = prios_key(ns, dep)
for _, prio in ipairs(redis.call('ZREVRANGE', pk, 0, -1)) do
  local s = skey(ns, dep, prio)
  while #out < limit do
    local want = limit - #out
    local got = redis.call('XREADGROUP', 'GROUP', GROUP, owner, 'COUNT', want, 'STREAMS', s, '>')
    local entries = got and got[1][2] or {}
    for _, e in ipairs(entries) do
      local entry, id = e[1], e[2][2]
      local k = ikey(id)
      local status, current = unpack(redis.call('HMGET', k, 'status', 'entry'))
      if status == 'queued' and current == entry then
        set_status(id, ns, dep, 'queued', 'running', now)
        redis.call('HINCRBY', k, 'attempts', 1)
        redis.call('HSET', k, 'lease_owner', owner, 'lease_until', lease_until,
                   'started_at', now, 'updated_at', now)
        redis.call('HDEL', k, 'finished_at', 'progress', 'progress_message')
        redis.call('ZADD', P .. ':leases', lease_until, id)
        out[#out + 1] = redis.call('HGETALL', k)
      else  -- a stale entry of a cancelled or moved invocation
        redis.call('XACK', s, GROUP, entry)
        redis.call('XDEL', s, entry)
      end
    end
    if #entries < want then break end
  end
  if redis.call('XLEN', s) == 0 then
    redis.call('DEL', s)
    redis.call('ZREM', pk, prio)
  end
  if #out >= limit then break end
end
return cmsgpack.pack(out)
"""

# ARGV: P, id, owner, new status, now, n, then n name/value pairs to set, then names to delete.
HELD = COMMON + r"""
local id, owner, new, now, n = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local k = ikey(id)
local status, lease_owner, ns, dep = unpack(
  redis.call('HMGET', k, 'status', 'lease_owner', 'namespace', 'deployment'))
if status ~= 'running' or lease_owner ~= owner then return false end
unplace(id, ns, dep)
redis.call('HDEL', k, 'lease_owner', 'lease_until')
if n > 0 then redis.call('HSET', k, unpack(ARGV, 7, 6 + 2 * n)) end
if #ARGV > 6 + 2 * n then redis.call('HDEL', k, unpack(ARGV, 7 + 2 * n)) end
set_status(id, ns, dep, 'running', new, now)
if new == 'queued' then
  local prio, not_before = unpack(redis.call('HMGET', k, 'priority', 'not_before'))
  place(id, ns, dep, prio, not_before, now)
end
return cmsgpack.pack(redis.call('HGETALL', k))
"""

# ARGV: P, namespace, id, now
CANCEL = COMMON + r"""
local ns, id, now = ARGV[2], ARGV[3], ARGV[4]
local k = ikey(id)
local status, owner_ns, dep = unpack(redis.call('HMGET', k, 'status', 'namespace', 'deployment'))
if not status or owner_ns ~= ns then return false end
if status == 'queued' or status == 'running' then
  unplace(id, ns, dep)
  redis.call('HDEL', k, 'lease_owner', 'lease_until')
  redis.call('HSET', k, 'finished_at', now, 'updated_at', now)
  set_status(id, ns, dep, status, 'cancelled', now)
end
return cmsgpack.pack(redis.call('HGETALL', k))
"""

# ARGV: P, owner, lease_until, ids...
RENEW = COMMON + r"""
local owner, lease_until = ARGV[2], ARGV[3]
for i = 4, #ARGV do
  local k = ikey(ARGV[i])
  local status, lease_owner = unpack(redis.call('HMGET', k, 'status', 'lease_owner'))
  if status == 'running' and lease_owner == owner then
    redis.call('HSET', k, 'lease_until', lease_until)
    redis.call('ZADD', P .. ':leases', lease_until, ARGV[i])
  end
end
return 0
"""

# ARGV: P, id, fraction, now, message (absent: none)
PROGRESS = COMMON + r"""
local k = ikey(ARGV[2])
if redis.call('HGET', k, 'status') ~= 'running' then return 0 end
redis.call('HSET', k, 'progress', ARGV[3], 'updated_at', ARGV[4])
if ARGV[5] then redis.call('HSET', k, 'progress_message', ARGV[5])
else redis.call('HDEL', k, 'progress_message') end
return 1
"""

# ARGV: P, namespace, deployment, now, expires_at, all ('1': the whole DLQ), ids...
REDRIVE = COMMON + r"""
local ns, dep, now, expires_at = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ids = {}
if ARGV[6] == '1' then ids = redis.call('ZRANGE', dlq_key(ns, dep), 0, -1)
else for i = 7, #ARGV do ids[#ids + 1] = ARGV[i] end end
local moved = {}
for _, id in ipairs(ids) do
  local k = ikey(id)
  local status, owner_ns, owner_dep, prio = unpack(
    redis.call('HMGET', k, 'status', 'namespace', 'deployment', 'priority'))
  if status == 'dead' and owner_ns == ns and owner_dep == dep then
    redis.call('HSET', k, 'attempts', 0, 'not_before', now, 'expires_at', expires_at,
               'updated_at', now)
    redis.call('HDEL', k, 'finished_at', 'lease_owner', 'lease_until')
    set_status(id, ns, dep, 'dead', 'queued', now)
    place(id, ns, dep, prio, now, now)
    moved[#moved + 1] = id
  end
end
return moved
"""

# ARGV: P, now
RECOVER = COMMON + r"""
local now = ARGV[2]
local count = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':leases', '-inf', '(' .. now)) do
  local k = ikey(id)
  local status, ns, dep, prio, not_before = unpack(
    redis.call('HMGET', k, 'status', 'namespace', 'deployment', 'priority', 'not_before'))
  redis.call('ZREM', P .. ':leases', id)
  if status == 'running' then
    unplace(id, ns, dep)
    redis.call('HDEL', k, 'lease_owner', 'lease_until')
    redis.call('HSET', k, 'updated_at', now)
    set_status(id, ns, dep, 'running', 'queued', now)
    place(id, ns, dep, prio, not_before, now)
    count = count + 1
  end
end
return count
"""

# ARGV: P, now, the error's JSON
EXPIRE = COMMON + r"""
local now, err = ARGV[2], ARGV[3]
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':expiry', '-inf', '(' .. now)) do
  local k = ikey(id)
  local status, ns, dep = unpack(redis.call('HMGET', k, 'status', 'namespace', 'deployment'))
  if status == 'queued' then
    unplace(id, ns, dep)
    redis.call('HSET', k, 'error', err, 'finished_at', now, 'updated_at', now)
    set_status(id, ns, dep, 'queued', 'dead', now)
    out[#out + 1] = redis.call('HGETALL', k)
  else
    redis.call('ZREM', P .. ':expiry', id)
  end
end
return cmsgpack.pack(out)
"""

# ARGV: P, finished_before, dead_before, batch: deletes up to a batch, returns how many.
PURGE = COMMON + r"""
local batch = tonumber(ARGV[4])
local count = 0
for _, pair in ipairs({{P .. ':done', ARGV[2]}, {P .. ':dead', ARGV[3]}}) do
  local ids = redis.call('ZRANGEBYSCORE', pair[1], '-inf', '(' .. pair[2], 'LIMIT', 0,
                         batch - count)
  for _, id in ipairs(ids) do
    local k = ikey(id)
    local ns, dep, key = unpack(redis.call('HMGET', k, 'namespace', 'deployment',
                                           'idempotency_key'))
    redis.call('ZREM', pair[1], id)
    if ns then
      redis.call('ZREM', dlq_key(ns, dep), id)
      redis.call('ZREM', P .. ':list:' .. ns, id)
      redis.call('ZREM', P .. ':listdep:' .. ns .. ':' .. dep, id)
      if key then
        local ik = P .. ':idem:' .. ns .. ':' .. key
        if redis.call('GET', ik) == id then redis.call('DEL', ik) end
      end
      redis.call('DEL', k)
    end
    count = count + 1
  end
end
return count
"""
