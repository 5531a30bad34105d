"""A callback at a deadline that moves often, on one event-loop timer.

A connection's deadlines move with every request on it, a stream's silence deadline with
every chunk: a loop timer cancelled and made each time was a measurable part of a small
request's and a chunk's cost. Here moving a deadline later only notes it; the timer, left
where it was, fires, finds the deadline later and is set again for it. Moving it earlier
re-arms the timer at once, so nothing ever fires late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Deadline:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due = 0.0
        self._on_due: Callable[[], object] | None = None  # None: nothing is due
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def set_in(self, seconds: float, on_due: Callable[[], object]) -> None:
        """Call `on_due` in `seconds` (instead of whatever was due before)."""
        due = self._due = self._loop.time() + seconds  # set_at's, without a call more: a stream's every chunk
        self._on_due = on_due
        if self._timer is None or self._timer_at > due:
            self._arm(due)

    def set_at(self, due: float, on_due: Callable[[], object]) -> None:
        """Call `on_due` at loop time `due` (instead of whatever was due before)."""
        self._due, self._on_due = due, on_due
        if self._timer is None or self._timer_at > due:
            self._arm(due)

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = self._loop.call_at(due, self._look), due

    def clear(self) -> None:
        """Nothing is due (the timer, if any, fires once more and finds nothing)."""
        self._on_due = None

    def stop(self) -> None:
        """Nothing is due, and the timer is gone (the owner is done)."""
        self._on_due = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _look(self) -> None:
        self._timer = None
        if self._on_due is None:
            return
        if self._loop.time() < self._due:
            self._timer, self._timer_at = self._loop.call_at(self._due, self._look), self._due
            return
        on_due, self._on_due = self._on_due, None
        on_due()
