"""The embedded store: limits in this process's memory (limits.py has the rules).

Exact for one gateway; it is also what a gateway falls back to while Redis is out of
reach (LIMITS_ON_STORE_ERROR=open), when each gateway then counts for itself.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vlserve.tenancy.keys import Limits
from vlserve.tenancy.limits import (
    DAY_S,
    WINDOW_S,
    Charge,
    LimitKind,
    Refusal,
    Subject,
    Verdict,
    WindowState,
    tightest,
)


@dataclass
class _Windows:
    requests: collections.deque[float] = field(default_factory=collections.deque)  # admission times
    tokens: dict[str, tuple[float, int]] = field(default_factory=dict)  # entry -> (time, tokens), oldest first
    token_sum: int = 0
    in_flight: dict[str, float] = field(default_factory=dict)  # ticket -> lease end
    images_day: int = -1
    images: int = 0

    def trim(self, now: float) -> None:
        while self.requests and self.requests[0] <= now - WINDOW_S:
            self.requests.popleft()
        while self.tokens:  # oldest first: stop at the first still in the window
            entry, (at, tokens) = next(iter(self.tokens.items()))
            if at > now - WINDOW_S:
                break
            del self.tokens[entry]
            self.token_sum -= tokens
        if self.in_flight and min(self.in_flight.values()) <= now:
            for ticket in [t for t, end in self.in_flight.items() if end <= now]:
                del self.in_flight[ticket]  # a lease its gateway never gave back
        if self.images_day != int(now // DAY_S):
            self.images_day, self.images = int(now // DAY_S), 0

    @property
    def idle(self) -> bool:
        """Nothing in any window: forgetting it changes no answer."""
        return not (self.requests or self.tokens or self.in_flight or self.images)

    def refusal(self, subject: Subject, charge: Charge, now: float) -> Refusal | None:
        limits = subject.limits
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        if charge.request and rpm is not None and len(self.requests) >= rpm:
            oldest = self.requests[len(self.requests) - rpm]
            return Refusal(subject, LimitKind.REQUESTS, rpm, oldest + WINDOW_S - now)
        if charge.request and limits.max_concurrent is not None and len(self.in_flight) >= limits.max_concurrent:
            return Refusal(subject, LimitKind.CONCURRENT, limits.max_concurrent, 1.0)
        if charge.tokens and tpm is not None:
            if charge.tokens > tpm:
                return Refusal(subject, LimitKind.TOKENS, tpm, 0.0, too_big=True)
            if self.token_sum + charge.tokens > tpm:
                needed = self.token_sum + charge.tokens - tpm
                return Refusal(subject, LimitKind.TOKENS, tpm, self._tokens_free_in(needed, now))
        ipd = limits.images_per_day
        if charge.images and ipd is not None and self.images + charge.images > ipd:
            if charge.images > ipd:
                return Refusal(subject, LimitKind.IMAGES, ipd, 0.0, too_big=True)
            return Refusal(subject, LimitKind.IMAGES, ipd, DAY_S - now % DAY_S)
        return None

    def _tokens_free_in(self, needed: int, now: float) -> float:
        """Seconds until reservations of `needed` tokens have left the window."""
        freed = 0
        for at, tokens in self.tokens.values():
            freed += tokens
            if freed >= needed:
                return at + WINDOW_S - now
        return WINDOW_S

    def take(self, limits: Limits, ticket: str, entry: str, charge: Charge, now: float, lease_s: float) -> None:
        """Record what a check admitted, in the windows its subject has limits for."""
        if charge.request and limits.requests_per_minute is not None:
            self.requests.append(now)
        if charge.request and limits.max_concurrent is not None:
            self.in_flight[ticket] = now + lease_s
        if charge.tokens and limits.tokens_per_minute is not None:
            self.tokens[entry] = (now, charge.tokens)
            self.token_sum += charge.tokens
        if limits.images_per_day is not None:
            self.images += charge.images

    def state(self, subject: Subject, now: float) -> WindowState:
        rpm, tpm = subject.limits.requests_per_minute, subject.limits.tokens_per_minute
        oldest_token = next(iter(self.tokens.values()), (now, 0))[0]
        return WindowState(
            requests_limit=rpm, requests_remaining=max(0, (rpm or 0) - len(self.requests)),
            requests_reset_s=(self.requests[0] + WINDOW_S - now) if self.requests else 0.0,
            tokens_limit=tpm, tokens_remaining=max(0, (tpm or 0) - self.token_sum),
            tokens_reset_s=(oldest_token + WINDOW_S - now) if self.tokens else 0.0)


SWEEP_EVERY = 1024  # checks between sweeps of idle subjects (users come and go)


class MemoryLimits:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._windows: dict[str, _Windows] = collections.defaultdict(_Windows)
        self._checks = 0

    def _sweep(self, now: float) -> None:
        for store_id, window in list(self._windows.items()):
            window.trim(now)
            if window.idle:
                del self._windows[store_id]

    @property
    def subjects_held(self) -> int:
        return len(self._windows)

    async def check(self, ticket: str, entry: str, subjects: list[Subject], charge: Charge,
                    lease_s: float) -> Verdict:
        now = self._clock()
        self._checks += 1
        if self._checks % SWEEP_EVERY == 0:
            self._sweep(now)
        windows = [self._windows[subject.store_id] for subject in subjects]
        for subject, window in zip(subjects, windows, strict=True):
            window.trim(now)
            refusal = window.refusal(subject, charge, now)
            if refusal is not None:
                return Verdict(refusal)
        for subject, window in zip(subjects, windows, strict=True):  # every subject had room: take from all
            window.take(subject.limits, ticket, entry, charge, now, lease_s)
        return Verdict(None, tightest([w.state(s, now) for s, w in zip(subjects, windows, strict=True)]))

    async def settle(self, ticket: str, subjects: list[Subject], tokens: dict[str, int], release: bool) -> None:
        """Reservations down to what was used; the place in flight given back."""
        for subject in subjects:
            window = self._windows.get(subject.store_id)
            if window is None:  # admitted by Redis: nothing here
                continue
            for entry, used in tokens.items():
                if entry in window.tokens:
                    at, reserved = window.tokens[entry]
                    window.tokens[entry] = (at, used)
                    window.token_sum += used - reserved
            if release:
                window.in_flight.pop(ticket, None)
