"""Admission control: a cap on engine requests in flight, a bounded queue in front of it.

A request over the cap waits in a FIFO queue for up to QUEUE_TIMEOUT_S; when the queue
is full, or the wait runs out, it is refused at once with 429 and Retry-After instead of
piling up in front of a GPU that cannot go faster.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Callable

from vlserve.errors import ErrorKind, ServiceError


class Admission:
    def __init__(self, limit: int, max_queued: int, timeout_s: float, who: str = "The server") -> None:
        self.who = who  # what the 429's message says is at capacity
        self.limit = limit
        self.max_queued = max_queued
        self.timeout_s = timeout_s
        self.active = 0
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._running: dict[int, tuple[str, float]] = {}  # place -> (what holds it, since): what a refusal names
        self._places = itertools.count()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def _refuse(self, why: str) -> ServiceError:
        return ServiceError(ErrorKind.OVERLOADED, f"{self.who} is at capacity ({why}); retry shortly.",
                            headers={"Retry-After": "1"})

    def _ahead(self) -> str:
        """What a refused request was behind, e.g. "1 request running (one for up to 1,000
        tokens, for 29 s) and 0 waiting"."""
        now = time.monotonic()
        running = [f"{what}, for {now - since:.0f} s" for what, since in list(self._running.values())[:3]]
        detail = f" ({'; '.join(running)})" if running else ""
        plural = "s" if self.active != 1 else ""
        return f"{self.active} request{plural} running{detail} and {len(self._waiters)} waiting"

    async def acquire(self, what: str = "a request") -> Callable[[], None]:
        """Wait for a place; returns the function that gives it back (call it exactly once).
        `what` names the request to those refused behind it."""
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return self._releaser(what)
        if len(self._waiters) >= self.max_queued:
            raise self._refuse(self._ahead())
        turn = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await asyncio.wait_for(asyncio.shield(turn), self.timeout_s)
        except TimeoutError:
            raise self._refuse(f"waited {self.timeout_s:g} s (QUEUE_TIMEOUT_S) behind {self._ahead()}") from None
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # handed a place just as the client left: pass it on
            raise
        finally:
            if not turn.done():
                turn.cancel()
            if turn in self._waiters:
                self._waiters.remove(turn)
        return self._releaser(what)

    def _releaser(self, what: str) -> Callable[[], None]:
        released = False
        place = next(self._places)
        self._running[place] = (what, time.monotonic())

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                del self._running[place]
                self._release()

        return release

    def _release(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)  # the place passes straight to the next in line
                return
        self.active -= 1
