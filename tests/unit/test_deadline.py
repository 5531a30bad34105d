"""The one-timer deadline behind the HTTP limits and a stream's idle watch: on a loop
whose clock the test turns, so what fires when is exact."""

from __future__ import annotations

import heapq
import itertools

from vlserve.deadline import Deadline


class Handle:
    def __init__(self, when: float, callback) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class TurnedLoop:
    """time() and call_at() of an event loop, with a clock moved by `advance`."""

    def __init__(self) -> None:
        self.now = 100.0
        self._timers: list[tuple[float, int, Handle]] = []
        self._order = itertools.count()
        self.timers_made = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback) -> Handle:
        handle = Handle(when, callback)
        heapq.heappush(self._timers, (when, next(self._order), handle))
        self.timers_made += 1
        return handle

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self._timers and self._timers[0][0] <= end:
            when, _, handle = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not handle.cancelled:
                handle.callback()
        self.now = end

    def live_timers(self) -> int:
        return sum(not handle.cancelled for _, _, handle in self._timers)


def test_a_deadline_moved_later_fires_then_and_not_before():
    loop, fired = TurnedLoop(), []
    deadline = Deadline(loop)
    deadline.set_in(10, lambda: fired.append(loop.now))
    for _ in range(5):  # each request on a kept-alive connection, each chunk of a stream
        loop.advance(4)
        deadline.set_in(10, lambda: fired.append(loop.now))
    loop.advance(9.5)
    assert fired == []
    loop.advance(0.5)
    assert fired == [130.0]
    assert loop.timers_made <= 4  # not one per move


def test_a_deadline_moved_earlier_fires_at_the_earlier_time():
    loop, fired = TurnedLoop(), []
    deadline = Deadline(loop)
    deadline.set_in(60, lambda: fired.append("late"))
    deadline.set_in(1, lambda: fired.append(loop.now))
    loop.advance(60)
    assert fired == [101.0]


def test_a_cleared_deadline_never_fires_and_a_stopped_one_leaves_no_timer():
    loop, fired = TurnedLoop(), []
    deadline = Deadline(loop)
    deadline.set_in(5, lambda: fired.append(1))
    deadline.clear()
    loop.advance(10)
    deadline.set_in(5, lambda: fired.append(2))
    deadline.stop()
    assert loop.live_timers() == 0
    loop.advance(10)
    assert fired == []
