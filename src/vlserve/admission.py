"""Admission control: a cap on engine requests in flight, a bounded queue in front of it.

A request over the cap waits in a FIFO queue for up to QUEUE_TIMEOUT_S; when the queue
is full, or the wait runs out, it is refused at once with 429 and Retry-After instead of
piling up in front of a GPU that cannot go faster.
"""

from __future__ import annotations

import asyncio
import collections
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

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def _refuse(self, why: str) -> ServiceError:
        return ServiceError(ErrorKind.OVERLOADED, f"{self.who} is at capacity ({why}); retry shortly.",
                            headers={"Retry-After": "1"})

    async def acquire(self) -> Callable[[], None]:
        """Wait for a place; returns the function that gives it back (call it exactly once)."""
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return self._releaser()
        if len(self._waiters) >= self.max_queued:
            raise self._refuse(f"{self.active} requests running, {len(self._waiters)} waiting")
        turn = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await asyncio.wait_for(asyncio.shield(turn), self.timeout_s)
        except TimeoutError:
            raise self._refuse(f"waited {self.timeout_s:g} s (QUEUE_TIMEOUT_S)") from None
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # handed a place just as the client left: pass it on
            raise
        finally:
            if not turn.done():
                turn.cancel()
            if turn in self._waiters:
                self._waiters.remove(turn)
        return self._releaser()

    def _releaser(self) -> Callable[[], None]:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._release()

        return release

    def _release(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)  # the place passes straight to the next in line
                return
        self.active -= 1
