"""What a limit check asks and answers, the same for the embedded store and Redis.

The rules, exact in every store (memory_store.py in Python, redis_store.py as one Lua
script per check, so every gateway on one Redis shares them):

- requests per minute: a sliding log. A request is admitted only if fewer than the limit
  were admitted in the 60 seconds before it, so no 60-second span ever holds more.
- tokens per minute: the same log, weighted. Each engine call reserves an upper bound of
  what it can use (prompt bound + max_tokens) and is admitted only if the reservations
  of the last 60 seconds plus its own fit; when the answer ends the reservation is
  settled down to what was used.
- max_concurrent: requests in flight, each holding a lease (so a gateway that died does
  not hold places for ever); the lease ends with the request.
- images per UTC day: a counter per day.

A check covers one or two subjects (the key, and the user when the key names one) and is
all or nothing: a request refused for its user takes nothing from its key.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from vlserve.tenancy.keys import Limits

WINDOW_S = 60.0
DAY_S = 86_400.0


class LimitKind(Enum):
    """(the message's words, the OpenAI code, the metric label)."""

    REQUESTS = ("requests per minute", "rate_limit_exceeded", "requests_per_minute")
    TOKENS = ("tokens per minute", "rate_limit_exceeded", "tokens_per_minute")
    CONCURRENT = ("requests at once", "rate_limit_exceeded", "max_concurrent")
    IMAGES = ("images per day", "insufficient_quota", "images_per_day")

    @property
    def words(self) -> str:
        return self.value[0]

    @property
    def code(self) -> str:
        return self.value[1]

    @property
    def label(self) -> str:
        return self.value[2]


@dataclass(frozen=True)
class Subject:
    """One holder of limits: a key, or one user of a key."""

    store_id: str  # the store's name for it: "team-a", or "openwebui\x1f<user>"
    label: str     # what a refusal's message calls it: "key 'team-a'", "user '42' of key 'openwebui'"
    limits: Limits


@dataclass(frozen=True)
class Charge:
    """What one check takes: a request (and a place in flight), tokens, images."""

    request: bool = False
    tokens: int = 0
    images: int = 0


@dataclass(frozen=True)
class Refusal:
    subject: Subject
    kind: LimitKind
    limit: int
    retry_after_s: float
    too_big: bool = False  # the charge alone is over the limit: waiting cannot help

    def message(self) -> str:
        name = self.subject.label
        if self.too_big:
            return (f"This request needs more {self.kind.words.split(' per ')[0]} than the {self.limit:,} "
                    f"{self.kind.words} allowed to {name}; make it smaller (max_tokens, images) or ask for "
                    f"a higher limit.")
        when = "at 00:00 UTC" if self.kind is LimitKind.IMAGES else f"in {self.retry_after_s:.1f} s"
        return f"Limit of {self.limit:,} {self.kind.words} reached for {name}; it resets {when}."


@dataclass(frozen=True)
class WindowState:
    """One subject's per-minute windows after a check, for the x-ratelimit-* headers."""

    requests_limit: int | None = None
    requests_remaining: int = 0
    requests_reset_s: float = 0.0
    tokens_limit: int | None = None
    tokens_remaining: int = 0
    tokens_reset_s: float = 0.0


@dataclass(frozen=True)
class Verdict:
    refusal: Refusal | None = None
    windows: WindowState | None = None  # of the subject with the least left

    @property
    def admitted(self) -> bool:
        return self.refusal is None


def tightest(states: list[WindowState]) -> WindowState | None:
    """The state the headers report: the subject a client will run into first."""
    if not states:
        return None

    def left(state: WindowState) -> float:
        shares = []
        if state.requests_limit:
            shares.append(state.requests_remaining / state.requests_limit)
        if state.tokens_limit:
            shares.append(state.tokens_remaining / state.tokens_limit)
        return min(shares, default=2.0)

    return min(states, key=left)
