"""Limits and usage in Redis (or Valkey), shared by every gateway that uses it.

Each check is one server-side Lua script: the same rules as memory_store.py, run
atomically inside Redis, on Redis's clock (so gateways with skewed clocks still share one
window). A settle, with its usage counters, is a second script. Keys per subject:

    vlserve:lim:<id>:req   sorted set, request -> admission time (ms)
    vlserve:lim:<id>:tok   sorted set, engine call -> reservation time; :amt its tokens
                           (hash, with the window's sum in field "_sum")
    vlserve:lim:<id>:run   sorted set, request in flight -> lease end
    vlserve:lim:<id>:img   hash {day, count}
    vlserve:usage:<day>    hash "<key>\\x1f<user>\\x1f<model>\\x1f<counter>" -> n

Every limit key expires on its own once idle, so users who come and go leave nothing.

Checks and settles asked for in one round of the event loop share one round trip
(redis_trips.py).
"""

from __future__ import annotations

import asyncio
from datetime import date

import redis.asyncio as redis

from vlserve.tenancy.limits import Charge, LimitKind, Refusal, Subject, Verdict, WindowState, tightest
from vlserve.tenancy.redis_trips import SharedTrips
from vlserve.tenancy.usage import COUNT_FIELDS, UsageCounts, UsageDelta, UsageKey, days

# One request's settle: ticket, subjects, tokens used per engine call, give its place back,
# its usage.
Settle = tuple[str, list[Subject], dict[str, int], bool, UsageDelta | None]
_SEP = "\x1f"

# ARGV: ticket, entry, lease ms, then per subject: rpm, tpm, max concurrent, images/day
# (-1: no limit), then the charge: request (0/1), tokens, images.
# Returns {0, subject index, kind, limit, retry ms, too big} or
# {1, then per subject: requests in window, oldest request ms, token sum, oldest token ms}.
_CHECK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local today = math.floor(tonumber(t[1]) / 86400)
local WINDOW = 60000
local ticket, entry, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
local n = #KEYS / 5
local c0 = 4 + n * 4
local want_req, want_tok, want_img = tonumber(ARGV[c0]), tonumber(ARGV[c0 + 1]), tonumber(ARGV[c0 + 2])
for i = 0, n - 1 do
  local req, tok, amt, run, img = KEYS[i*5+1], KEYS[i*5+2], KEYS[i*5+3], KEYS[i*5+4], KEYS[i*5+5]
  local a = 4 + i * 4
  local rpm, tpm, maxc, ipd = tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), tonumber(ARGV[a+3])
  redis.call('ZREMRANGEBYSCORE', req, '-inf', now - WINDOW)
  local old = redis.call('ZRANGEBYSCORE', tok, '-inf', now - WINDOW)
  if #old > 0 then
    local freed = 0
    for from = 1, #old, 1000 do  -- unpack() has a limit (~8,000): in runs of 1,000
      local run = {unpack(old, from, math.min(from + 999, #old))}
      for _, v in ipairs(redis.call('HMGET', amt, unpack(run))) do freed = freed + (tonumber(v) or 0) end
      redis.call('HDEL', amt, unpack(run))
    end
    redis.call('HINCRBY', amt, '_sum', -freed)
    redis.call('ZREMRANGEBYSCORE', tok, '-inf', now - WINDOW)
  end
  redis.call('ZREMRANGEBYSCORE', run, '-inf', now)
  if want_req == 1 and rpm >= 0 then
    local count = redis.call('ZCARD', req)
    if count >= rpm then
      if rpm == 0 then return {0, i, 'requests', rpm, WINDOW, 1} end
      local oldest = redis.call('ZRANGE', req, count - rpm, count - rpm, 'WITHSCORES')
      return {0, i, 'requests', rpm, tonumber(oldest[2]) + WINDOW - now, 0}
    end
  end
  if want_req == 1 and maxc >= 0 and redis.call('ZCARD', run) >= maxc then
    return {0, i, 'concurrent', maxc, 1000, 0}
  end
  if want_tok > 0 and tpm >= 0 then
    if want_tok > tpm then return {0, i, 'tokens', tpm, 0, 1} end
    local sum = tonumber(redis.call('HGET', amt, '_sum')) or 0
    if sum + want_tok > tpm then
      local needed, freed, wait = sum + want_tok - tpm, 0, WINDOW
      local held = redis.call('ZRANGE', tok, 0, -1, 'WITHSCORES')
      for j = 1, #held, 2 do
        freed = freed + (tonumber(redis.call('HGET', amt, held[j])) or 0)
        if freed >= needed then wait = tonumber(held[j + 1]) + WINDOW - now break end
      end
      return {0, i, 'tokens', tpm, wait, 0}
    end
  end
  if want_img > 0 and ipd >= 0 then
    local used = 0
    if tonumber(redis.call('HGET', img, 'day')) == today then used = tonumber(redis.call('HGET', img, 'count')) end
    if used + want_img > ipd then
      return {0, i, 'images', ipd, 86400000 - (now % 86400000), want_img > ipd and 1 or 0}
    end
  end
end
local out = {1}
for i = 0, n - 1 do
  local req, tok, amt, run, img = KEYS[i*5+1], KEYS[i*5+2], KEYS[i*5+3], KEYS[i*5+4], KEYS[i*5+5]
  local a = 4 + i * 4
  if want_req == 1 then
    if tonumber(ARGV[a]) >= 0 then
      redis.call('ZADD', req, now, ticket)
      redis.call('PEXPIRE', req, WINDOW)
    end
    if tonumber(ARGV[a+2]) >= 0 then
      redis.call('ZADD', run, now + lease, ticket)
      redis.call('PEXPIRE', run, lease)
    end
  end
  if want_tok > 0 and tonumber(ARGV[a+1]) >= 0 then
    redis.call('ZADD', tok, now, entry)
    redis.call('HSET', amt, entry, want_tok)
    redis.call('HINCRBY', amt, '_sum', want_tok)
    redis.call('PEXPIRE', tok, WINDOW)
    redis.call('PEXPIRE', amt, WINDOW)
  end
  if want_img > 0 and tonumber(ARGV[a+3]) >= 0 then
    if tonumber(redis.call('HGET', img, 'day')) ~= today then redis.call('HSET', img, 'day', today, 'count', 0) end
    redis.call('HINCRBY', img, 'count', want_img)
    redis.call('EXPIRE', img, 172800)
  end
  local first_req = redis.call('ZRANGE', req, 0, 0, 'WITHSCORES')
  local first_tok = redis.call('ZRANGE', tok, 0, 0, 'WITHSCORES')
  table.insert(out, redis.call('ZCARD', req))
  table.insert(out, first_req[2] and (tonumber(first_req[2]) + WINDOW - now) or 0)
  table.insert(out, tonumber(redis.call('HGET', amt, '_sum')) or 0)
  table.insert(out, first_tok[2] and (tonumber(first_tok[2]) + WINDOW - now) or 0)
end
return out
"""

# KEYS: per subject tok, amt, run; then the usage hash (or none); last, the ticket's
# "settled" mark. ARGV: ticket, release (0/1), number of entries, entries as (entry,
# tokens used), then usage as (field, n). A settle sent twice (its answer lost, so sent
# again) is applied once: the mark says it was.
_SETTLE = """
if redis.call('SET', KEYS[#KEYS], 1, 'NX', 'EX', 86400) == false then return 0 end
local ticket, release, entries = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3])
local subjects = math.floor((#KEYS - 1) / 3)
for i = 0, subjects - 1 do
  local amt, run = KEYS[i*3+2], KEYS[i*3+3]
  for e = 0, entries - 1 do
    local entry, used = ARGV[4 + e*2], tonumber(ARGV[5 + e*2])
    local reserved = tonumber(redis.call('HGET', amt, entry))
    if reserved then
      redis.call('HSET', amt, entry, used)
      redis.call('HINCRBY', amt, '_sum', used - reserved)
    end
  end
  if release then redis.call('ZREM', run, ticket) end
end
if (#KEYS - 1) % 3 == 1 then
  local usage = KEYS[#KEYS - 1]
  for u = 4 + entries * 2, #ARGV, 2 do redis.call('HINCRBY', usage, ARGV[u], ARGV[u + 1]) end
end
return 1
"""

_KINDS = {"requests": LimitKind.REQUESTS, "tokens": LimitKind.TOKENS, "concurrent": LimitKind.CONCURRENT,
          "images": LimitKind.IMAGES}


def _keys(subject: Subject) -> list[str]:
    base = f"vlserve:lim:{subject.store_id}:"
    return [base + "req", base + "tok", base + "amt", base + "run", base + "img"]


def _limit_args(subject: Subject) -> list[int]:
    limits = subject.limits
    values = (limits.requests_per_minute, limits.tokens_per_minute, limits.max_concurrent, limits.images_per_day)
    return [-1 if value is None else value for value in values]


def _usage_key(day: str) -> str:
    return f"vlserve:usage:{day}"


def _settle_call(ticket: str, subjects: list[Subject], tokens: dict[str, int], release: bool,
                 usage: UsageDelta | None) -> tuple[list[str], list[str | int]]:
    """The settle script's keys and arguments."""
    keys = [key for subject in subjects for key in _keys(subject)[1:4]]
    args: list[str | int] = [ticket, int(release), len(tokens)]
    for entry, used in tokens.items():
        args += [entry, used]
    if usage is not None:
        keys.append(_usage_key(usage.where.day))
        where = usage.where
        prefix = _SEP.join((where.key, where.user or "", where.model or "")) + _SEP
        for name in COUNT_FIELDS:
            if getattr(usage.counts, name):
                args += [prefix + name, getattr(usage.counts, name)]
    keys.append(f"vlserve:settled:{ticket}")
    return keys, args


class RedisStore:
    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                           decode_responses=True, retry_on_timeout=False)
        self._check = self.client.register_script(_CHECK)
        self._settle = self.client.register_script(_SETTLE)
        self._trips = SharedTrips(self.client)

    async def check(self, ticket: str, entry: str, subjects: list[Subject], charge: Charge,
                    lease_s: float) -> Verdict:
        keys = [key for subject in subjects for key in _keys(subject)]
        args: list[str | int] = [ticket, entry, int(lease_s * 1000)]
        args += [value for subject in subjects for value in _limit_args(subject)]
        args += [int(charge.request), charge.tokens, charge.images]
        answer = await self._trips.ask(self._check, keys, args)
        if answer[0] == 0:
            _, index, kind, limit, retry_ms, too_big = answer
            return Verdict(Refusal(subjects[index], _KINDS[kind], int(limit), int(retry_ms) / 1000, bool(too_big)))
        states = []
        for index, subject in enumerate(subjects):
            in_window, request_reset, token_sum, token_reset = answer[1 + index * 4: 5 + index * 4]
            rpm, tpm = subject.limits.requests_per_minute, subject.limits.tokens_per_minute
            states.append(WindowState(rpm, max(0, (rpm or 0) - int(in_window)), int(request_reset) / 1000,
                                      tpm, max(0, (tpm or 0) - int(token_sum)), int(token_reset) / 1000))
        return Verdict(None, tightest(states))

    async def settle(self, ticket: str, subjects: list[Subject], tokens: dict[str, int], release: bool,
                     usage: UsageDelta | None = None) -> None:
        await self.settle_many([(ticket, subjects, tokens, release, usage)])

    async def settle_many(self, settles: list[Settle]) -> None:
        """Several settles, in the round trip of this loop round; raises the first that
        failed."""
        replies = await asyncio.gather(*(self._trips.ask(self._settle, *_settle_call(*settle)) for settle in settles),
                                       return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply

    async def usage_rows(self, start: date, end: date) -> dict[UsageKey, UsageCounts]:
        async with self.client.pipeline(transaction=False) as pipe:
            wanted = days(start, end)
            for day in wanted:
                pipe.hgetall(_usage_key(day))
            found = await pipe.execute()
        rows: dict[UsageKey, UsageCounts] = {}
        for day, counters in zip(wanted, found, strict=True):
            for name, value in counters.items():
                key, user, model, counter = name.split(_SEP)
                counts = rows.setdefault(UsageKey(day, key, user or None, model or None), UsageCounts())
                setattr(counts, counter, getattr(counts, counter) + int(value))
        return rows

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()
