"""Who is asking, what they may still use, and what they used: one `Ticket` per request.

The HTTP edge makes a ticket for each request to an engine route and admits the request
(requests per minute, places in flight); the engine-call path reserves each call's
tokens and images on it; when the response is over the ticket is settled (tokens down
to what was used, the place given back) and its usage recorded. With Redis that is one
round trip per step; without, function calls.

`Quota` chooses the store: the embedded one, or Redis with the embedded one as the
fallback while Redis is out of reach (LIMITS_ON_STORE_ERROR=open), or a 503 (closed).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from vlserve.errors import ErrorKind, ServiceError
from vlserve.tenancy.keys import ANONYMOUS, ApiKey
from vlserve.tenancy.limits import Charge, LimitKind, Refusal, Subject, Verdict, WindowState
from vlserve.tenancy.memory_store import MemoryLimits
from vlserve.tenancy.redis_store import RedisStore, Settle
from vlserve.tenancy.usage import UsageCounts, UsageDelta, UsageFile, UsageKey, delta_for, merge

log = logging.getLogger("vlserve.limits")

# Redis out of reach (down, slow): limits fall back (or refuse) until it answers again. Any
# other RedisError is a refused command (a script's limit, memory full): that request's
# problem, not an outage for every tenant.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

RETRY_STORE_AFTER_S = 1.0  # while Redis is unreachable, requests don't each wait for its timeout
SAY_STORE_DOWN_EVERY_S = 60.0
MAX_PENDING = 100_000      # settles kept for Redis while it is away (usage is not lost)
SETTLE_BATCH = 256         # settles sent to Redis in one round trip
SEP = "\x1f"


@dataclass(frozen=True)
class Caller:
    key: ApiKey
    user: str | None = None

    def subjects(self) -> list[Subject]:
        found = []
        if self.key.limits.any:
            found.append(Subject(self.key.name, f"key {self.key.name!r}", self.key.limits))
        if self.user is not None and self.key.per_user is not None and self.key.per_user.any:
            found.append(Subject(self.key.name + SEP + self.user, f"user {self.user!r} of key {self.key.name!r}",
                                 self.key.per_user))
        return found

    def may_use(self, model: str, aliases: dict[str, str]) -> bool:
        """`model` (an id or an alias) is on the key's list, under either name; `aliases`
        maps each alias the catalog knows to the engine id it means."""
        allowed = self.key.models
        if allowed is None:
            return True
        return aliases.get(model, model) in {aliases.get(name, name) for name in allowed}


ANONYMOUS_CALLER = Caller(ANONYMOUS)


class LimitsUnavailable(ServiceError):
    def __init__(self) -> None:
        super().__init__(ErrorKind.LIMITS_UNAVAILABLE, "Limits cannot be checked right now (the shared store is "
                         "out of reach) and this server refuses rather than guess; retry shortly.",
                         headers={"Retry-After": "1"})


def refused(refusal: Refusal) -> ServiceError:
    """OpenAI's 429: Retry-After (whole seconds, rounded up) and retry-after-ms, which the
    openai SDK's retry reads first, and the x-ratelimit-* trio of the limit that refused."""
    if refusal.too_big:  # waiting cannot help: not a 429 a client's retry would repeat
        return ServiceError(ErrorKind.BAD_REQUEST, refusal.message(), extra={"limit": refusal.kind.label})
    kind = ErrorKind.QUOTA_EXCEEDED if refusal.kind is LimitKind.IMAGES else ErrorKind.RATE_LIMITED
    retry_ms = max(1, math.ceil(refusal.retry_after_s * 1000))
    headers = {"Retry-After": str(math.ceil(retry_ms / 1000)), "retry-after-ms": str(retry_ms)}
    unit = {LimitKind.REQUESTS: "requests", LimitKind.TOKENS: "tokens"}.get(refusal.kind)
    if unit is not None:
        headers |= {f"x-ratelimit-limit-{unit}": str(refusal.limit), f"x-ratelimit-remaining-{unit}": "0",
                    f"x-ratelimit-reset-{unit}": f"{refusal.retry_after_s:.3g}s"}
    return ServiceError(kind, refusal.message(), headers=headers)


class Quota:
    def __init__(self, usage_file: Path | None, redis_url: str | None = None, redis_timeout_s: float = 0.5,
                 on_store_error: Literal["open", "closed"] = "open", lease_s: float = 3600.0) -> None:
        self.local = MemoryLimits()
        self.usage_file = UsageFile(usage_file if redis_url is None else None)
        self.shared = RedisStore(redis_url, redis_timeout_s) if redis_url else None
        self.on_store_error = on_store_error
        self.lease_s = lease_s
        self.store_up = True
        self.store_errors = 0
        self.refusals: dict[tuple[str, str], int] = {}  # (key name, limit) -> count, a metric
        self._retry_store_at = 0.0
        self._said_down_at = -SAY_STORE_DOWN_EVERY_S
        self._pending: list[Settle] = []  # settles not yet in Redis (sent in batches; kept while it is away)
        self._sending: list[Settle] = []
        self._sender: asyncio.Task[None] | None = None
        self._ids = itertools.count()
        self._prefix = os.urandom(6).hex()

    def ticket(self, caller: Caller) -> Ticket:
        return Ticket(self, caller, f"{self._prefix}-{next(self._ids)}")

    # --- the store, or its stand-in ------------------------------------------------------
    def _store_usable(self) -> bool:
        return self.shared is not None and time.monotonic() >= self._retry_store_at

    def _store_failed(self, exc: Exception) -> None:
        self.store_up = False
        self.store_errors += 1
        self._retry_store_at = time.monotonic() + RETRY_STORE_AFTER_S
        if time.monotonic() - self._said_down_at >= SAY_STORE_DOWN_EVERY_S:
            self._said_down_at = time.monotonic()
            how = ("each gateway limits on its own until it is back" if self.on_store_error == "open"
                   else "requests with limits are refused (503) until it is back")
            log.warning("Redis (%s) is out of reach (%s): %s (LIMITS_ON_STORE_ERROR=%s)",
                        self.shared.url if self.shared else "-", exc or type(exc).__name__, how, self.on_store_error)

    def _store_back(self) -> None:
        if not self.store_up:
            self.store_up = True
            log.warning("Redis is back: limits are shared again; %d settles kept meanwhile are sent",
                        len(self._pending))
        self._send_settles()

    def _send_settles(self) -> None:
        """Settles go to Redis from one task, in batches: one round trip for all the
        requests that ended while the previous batch was on its way."""
        if self._pending and self._store_usable() and (self._sender is None or self._sender.done()):
            self._sender = asyncio.get_running_loop().create_task(self._settle_batches())

    async def _settle_batches(self) -> None:
        assert self.shared is not None
        while self._pending and self._store_usable():
            self._sending, self._pending = self._pending[:SETTLE_BATCH], self._pending[SETTLE_BATCH:]
            try:
                await self.shared.settle_many(self._sending)
            except UNREACHABLE as exc:
                self._pending = self._sending + self._pending  # kept, in order, for when Redis is back
                self._store_failed(exc)
            except RedisError as exc:  # refused, not unreachable: sending it again would not help
                log.error("Redis refused %d settles (%s); their usage is not recorded", len(self._sending), exc)
            finally:
                self._sending = []

    async def check(self, ticket: str, entry: str, subjects: list[Subject], charge: Charge) -> Verdict:
        if self.shared is not None:
            if self._store_usable():
                try:
                    verdict = await self.shared.check(ticket, entry, subjects, charge, self.lease_s)
                except UNREACHABLE as exc:
                    self._store_failed(exc)
                except RedisError as exc:  # this check refused (a script's limit): this request alone
                    log.error("Redis refused a limit check (%s); this request is checked as Redis is away", exc)
                else:
                    self._store_back()
                    return verdict
            if self.on_store_error == "closed":
                raise LimitsUnavailable()
        return await self.local.check(ticket, entry, subjects, charge, self.lease_s)

    async def settle(self, ticket: str, subjects: list[Subject], tokens: dict[str, int], release: bool,
                     usage: UsageDelta | None) -> None:
        if subjects:  # nothing to settle for a key without limits
            await self.local.settle(ticket, subjects, tokens, release)  # a no-op unless it admitted the ticket
        if self.shared is None:
            if usage is not None:
                self.usage_file.add(usage)
            return
        if len(self._pending) < MAX_PENDING:
            self._pending.append((ticket, subjects, tokens, release, usage))
        self._send_settles()

    async def usage(self, start: date, end: date) -> dict[UsageKey, UsageCounts]:
        if self.shared is None:
            return await self.usage_file.rows(start, end)
        try:
            rows = await self.shared.usage_rows(start, end)
        except UNREACHABLE as exc:
            self._store_failed(exc)
            raise LimitsUnavailable() from None
        except RedisError as exc:
            log.error("Redis refused to read usage: %s", exc)
            raise LimitsUnavailable() from None
        waiting = merge(args[4] for args in [*self._sending, *self._pending] if args[4] is not None)
        for where, counts in waiting.items():
            if start.isoformat() <= where.day <= end.isoformat():
                rows.setdefault(where, UsageCounts()).add(counts)
        return rows

    def count_refusal(self, key: str, kind: LimitKind) -> None:
        self.refusals[key, kind.label] = self.refusals.get((key, kind.label), 0) + 1

    async def close(self) -> None:
        await self.usage_file.close()
        if self.shared is not None:
            if self._sender is not None:
                await asyncio.gather(self._sender, return_exceptions=True)
            if self._pending:
                log.warning("%d settles could not reach Redis before the gateway stopped", len(self._pending))
            await self.shared.close()


@dataclass
class Ticket:
    """One request's dealings with the limits, from its arrival to its settling."""

    quota: Quota
    caller: Caller
    id: str
    subjects: list[Subject] = field(init=False)
    windows: WindowState | None = None  # for the x-ratelimit-* headers
    aliases: dict[str, str] = field(default_factory=dict)  # model names the catalog rewrites -> engine ids
    model: str | None = None
    images: int = 0
    _admitted: bool = False
    _reserved: dict[str, int] = field(default_factory=dict)  # engine call -> tokens reserved
    _used: dict[str, tuple[int, int]] = field(default_factory=dict)  # engine call -> (prompt, completion)
    _calls: itertools.count = field(default_factory=itertools.count)
    _images_sent: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.subjects = self.caller.subjects()

    @property
    def limited(self) -> bool:
        return bool(self.subjects)

    async def admit(self) -> None:
        """At the door: a request, and a place in flight. Raises the 429 (or 503)."""
        if not (self.limited and any(subject.limits.per_request for subject in self.subjects)):
            return
        # Released at the end whatever the check's fate: a check that reached Redis but whose
        # answer was lost may hold a place (giving back one it does not hold changes nothing).
        self._admitted = True
        await self._take("", Charge(request=True))

    async def reserve(self, tokens: int, images: int, image_ids: tuple[str, ...] = ()) -> str:
        """Before an engine call: its token bound and its images (an image this request
        already sent, named by its content id, is not counted again: an extraction's repair
        turn, a page tried once more). Returns the call's name."""
        entry = f"{self.id}:{next(self._calls)}"
        if image_ids:
            images -= sum(1 for image in image_ids if image in self._images_sent)
        if self.limited and any(s.limits.tokens_per_minute or s.limits.images_per_day is not None
                                for s in self.subjects):
            await self._take(entry, Charge(tokens=tokens, images=images))
            self._reserved[entry] = tokens
        self.images += images  # sent to the engine: counted in usage
        self._images_sent.update(image_ids)
        return entry

    def spent(self, entry: str, prompt_tokens: int, completion_tokens: int) -> None:
        self._used[entry] = (prompt_tokens, completion_tokens)

    async def _take(self, entry: str, charge: Charge) -> None:
        verdict = await self.quota.check(self.id, entry, self.subjects, charge)
        if verdict.refusal is not None:
            self.quota.count_refusal(self.caller.key.name, verdict.refusal.kind)
            raise refused(verdict.refusal)
        self.windows = verdict.windows or self.windows

    async def finish(self, status: int) -> None:
        """The response is over: settle the reservations, give the place back, record usage."""
        settled = {entry: sum(self._used[entry]) if entry in self._used else reserved
                   for entry, reserved in self._reserved.items()}
        prompt = completion = 0
        for used_prompt, used_completion in self._used.values():
            prompt += used_prompt
            completion += used_completion
        usage = delta_for(self.caller.key.name, self.caller.user, self.model, status, prompt, completion,
                          self.images)
        await self.quota.settle(self.id, self.subjects, settled, self._admitted, usage)
