"""The Lua scripts that make each layer operation one atomic round trip.

Key names and the queue entry header are keys.py's: the scripts get every key (or, for
``group_send``, the heads member keys start with) from their caller, and the header's time width
and the mark of an uncounted (pushed) entry are formatted in from ``keys.TIME_DIGITS`` and
``keys.UNCOUNTED``. The scripts write counted entries only; ``push()`` writes its own with plain
commands (redis.py).

A group's keys live on the shard of each member channel (one set per shard), so ``group_send``
is one script per shard and every message is written where its receiver reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .keys import TIME_DIGITS, UNCOUNTED

__all__ = [
    "FORGET_IDLE",
    "GROUP_ADD",
    "GROUP_BUCKETS",
    "GROUP_DISCARD",
    "GROUP_INDEX_ADD",
    "GROUP_SEND",
    "OVERFLOW",
    "SEND",
    "LuaScript",
    "skipped_members",
]


@dataclass(frozen=True)
class LuaScript:
    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


_COMMON = (
    (
        r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function uncount(n, entry)
  -- A pushed entry took no capacity: nothing to count off.
  if string.sub(entry, DIGITS + 1, DIGITS + 1) == 'UNCOUNTED_MARK' then return end
  local nl = string.find(entry, '\n', DIGITS + 1, true)
  if not nl then return end
  local channel = string.sub(entry, DIGITS + 1, nl - 1)
  if redis.call('HINCRBY', n, channel, -1) <= 0 then redis.call('HDEL', n, channel) end
end

-- Drop expired entries from the head of a queue (entries are in send order).
local function trim(q, n, cutoff)
  for _ = 1, 1000 do
    local head = redis.call('LINDEX', q, 0)
    if not head then return end
    local sent = tonumber(string.sub(head, 1, DIGITS))
    if sent and sent >= cutoff then return end
    redis.call('LPOP', q)
    if n then uncount(n, head) end
  end
end

local function over(q, n, channel, capacity)
  if n then
    if redis.call('HINCRBY', n, channel, 1) > capacity then
      redis.call('HINCRBY', n, channel, -1)
      return true
    end
    return false
  end
  return redis.call('LLEN', q) >= capacity
end

-- Expired entries are trimmed only when a channel looks full: until then they cost nothing
-- (readers drop them by their time), and the common send stays at a handful of calls. A
-- normal channel is counted by the length RPUSH returns: an entry over capacity is taken back
-- at once (RPOP takes it: the script runs alone), so the common send needs no LLEN.
-- stamp is now as the entry header writes it. refreshed (group_send: one call, many pushes)
-- holds the keys this script already gave their expiry: a key pushed to again keeps it, as
-- long as nothing deleted it meanwhile, which only trimming can (then expiry is set again).
local function push(q, n, channel, payload, capacity, expiry, now, stamp, refreshed)
  local entry = stamp .. channel .. '\n' .. payload
  if n then
    if over(q, n, channel, capacity) then
      refreshed = nil
      trim(q, n, now - expiry)
      if over(q, n, channel, capacity) then return 0 end
    end
    redis.call('RPUSH', q, entry)
    if not (refreshed and refreshed[n]) then
      redis.call('PEXPIRE', n, expiry)
      if refreshed then refreshed[n] = true end
    end
  elseif redis.call('RPUSH', q, entry) > capacity then
    refreshed = nil
    redis.call('RPOP', q)
    trim(q, nil, now - expiry)
    if redis.call('LLEN', q) >= capacity then return 0 end
    redis.call('RPUSH', q, entry)
  end
  if not (refreshed and refreshed[q]) then
    redis.call('PEXPIRE', q, expiry)
    if refreshed then refreshed[q] = true end
  end
  return 1
end

local function stamp_of(now)
  return string.format('%0DIGITSd', now)
end
"""
    )
    .replace("DIGITS", str(TIME_DIGITS))
    .replace("UNCOUNTED_MARK", UNCOUNTED)
)

# KEYS: queue [, inbox counters]   ARGV: channel, payload, capacity, expiry_ms
SEND = LuaScript(
    "send",
    _COMMON
    + r"""
local now = now_ms()
return push(KEYS[1], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), now,
  stamp_of(now), nil)
""",
)

# KEYS: queue   ARGV: entry, capacity, expiry_ms
# The second step of a send to a normal channel (redis.py): its plain RPUSH left the queue
# longer than its capacity. Entries of other sends in the same step may be counted with it;
# each of them is decided by its own call, so the queue never holds more kept entries than its
# capacity. Over capacity once expired entries are trimmed, the entry is taken back (1: sent,
# kept or already received; 0: taken back, the channel is full). Taken back where it lies, so
# a kept entry never moves behind one pushed after it.
OVERFLOW = LuaScript(
    "overflow",
    _COMMON
    + r"""
local q, capacity = KEYS[1], tonumber(ARGV[2])
if redis.call('LLEN', q) <= capacity then return 1 end
trim(q, nil, now_ms() - tonumber(ARGV[3]))
if redis.call('LLEN', q) <= capacity then return 1 end
return 1 - redis.call('LREM', q, -1, ARGV[1])
""",
)

# KEYS: inbox counters   ARGV: channels
# Receivers ack with a plain HINCRBY -1 (cheap, on every message's path), which leaves fields
# at 0; a reader sweeps the channels it acked with this now and then.
FORGET_IDLE = LuaScript(
    "forget_idle",
    r"""
local removed = 0
for i = 1, #ARGV do
  if tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or 1) <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[i])
    removed = removed + 1
  end
end
return removed
""",
)

# KEYS: group set, group capacities   ARGV: channel, capacity, group_expiry_ms
GROUP_ADD = LuaScript(
    "group_add",
    _COMMON
    + r"""
redis.call('ZADD', KEYS[1], now_ms(), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]))
return 1
""",
)

# KEYS: group set, group capacities   ARGV: channel
GROUP_DISCARD = LuaScript(
    "group_discard",
    r"""
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
""",
)

# KEYS: group set, group capacities
# ARGV: queue key head, counter key head, payload, expiry_ms, group_expiry_ms
# Sends to every live member on this shard (cluster: in this bucket); a member's queue key is
# the queue head + its routing name (keys.py), the same for its inbox counters.
# Returns {sent, full, full member names...}.
GROUP_SEND = LuaScript(
    "group_send",
    _COMMON
    + r"""
local g, gc = KEYS[1], KEYS[2]
local queues, counters, payload = ARGV[1], ARGV[2], ARGV[3]
local expiry, group_expiry = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
local stale = redis.call('ZRANGEBYSCORE', g, '-inf', '(' .. (now - group_expiry))
for i = 1, #stale do redis.call('HDEL', gc, stale[i]) end
if #stale > 0 then redis.call('ZREMRANGEBYSCORE', g, '-inf', '(' .. (now - group_expiry)) end
local members = redis.call('ZRANGE', g, 0, -1)
local result = {0, 0}
local stamp, refreshed = stamp_of(now), {}
for i = 1, #members do
  local channel = members[i]
  local bang = string.find(channel, '!', 1, true)
  local q, n
  if bang then
    local inbox = string.sub(channel, 1, bang)
    q, n = queues .. inbox, counters .. inbox
  else
    q = queues .. channel
  end
  local capacity = tonumber(redis.call('HGET', gc, channel)) or 100
  if push(q, n, channel, payload, capacity, expiry, now, stamp, refreshed) == 1 then
    result[1] = result[1] + 1
  else
    result[2] = result[2] + 1
    if #result < 12 then result[#result + 1] = channel end
  end
end
return result
""",
)


def skipped_members(group: str, results: Sequence[Any]) -> str | None:
    """The warning for the members a ``group_send`` skipped at capacity, from its GROUP_SEND
    results (one per place: sent, full, the first full members' names); None if none was."""
    full = sum(int(result[1]) for result in results)
    if not full:
        return None
    names = [n.decode() for result in results for n in result[2:]]
    more = ", ..." if len(names) < full else ""
    return f"group_send to {group!r} skipped {full} member(s) at capacity: {', '.join(names)}{more}"


# Cluster only. KEYS: group index   ARGV: bucket, group_expiry_ms
GROUP_INDEX_ADD = LuaScript(
    "group_index_add",
    _COMMON
    + r"""
redis.call('ZADD', KEYS[1], now_ms(), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
""",
)

# Cluster only. KEYS: group index   ARGV: group_expiry_ms
# The buckets that may hold live members: one not re-added within group_expiry holds none.
GROUP_BUCKETS = LuaScript(
    "group_buckets",
    _COMMON
    + r"""
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now_ms() - tonumber(ARGV[1])))
return redis.call('ZRANGE', KEYS[1], 0, -1)
""",
)
