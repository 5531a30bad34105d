"""Waiting for something a test can observe, instead of sleeping and hoping.

`eventually(condition)` polls until the condition holds and returns at once when it does;
it gives up only after a generous timeout, returning the condition's last value so the
assert that wraps it fails with something to read. A busy 2-core machine makes a test
slower, never wrong.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

PATIENCE_S = 30.0  # how long "eventually" may take on a loaded machine before it is a failure


def eventually(condition: Callable[[], T], timeout: float = PATIENCE_S, interval: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


async def eventually_async(condition: Callable[[], T | Awaitable[T]], timeout: float = PATIENCE_S,
                           interval: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if isinstance(value, Awaitable):
            value = await value
        if value or time.monotonic() >= deadline:
            return value  # type: ignore[return-value]
        await asyncio.sleep(interval)
