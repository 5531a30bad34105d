from __future__ import annotations

import asyncio

import pytest

from vlserve.admission import Admission
from vlserve.errors import ServiceError


async def test_cap_queue_and_fifo_hand_over():
    admission = Admission(limit=2, max_queued=2, timeout_s=5)
    first, second = await admission.acquire(), await admission.acquire()
    order = []

    async def wait(name):
        release = await admission.acquire()
        order.append(name)
        return release

    third, fourth = asyncio.create_task(wait("third")), asyncio.create_task(wait("fourth"))
    await asyncio.sleep(0.01)
    assert (admission.active, admission.queued) == (2, 2)
    with pytest.raises(ServiceError) as info:  # queue full: refused at once
        await admission.acquire()
    assert info.value.status == 429 and info.value.headers["Retry-After"] == "1"
    first()
    first()  # a second release of the same place changes nothing
    await asyncio.sleep(0.01)
    assert order == ["third"] and admission.active == 2
    second()
    releases = [await third, await fourth]
    assert order == ["third", "fourth"]
    for release in releases:
        release()
    assert (admission.active, admission.queued) == (0, 0)


async def test_queue_timeout_is_429():
    admission = Admission(limit=1, max_queued=5, timeout_s=0.05)
    await admission.acquire()
    with pytest.raises(ServiceError) as info:
        await admission.acquire()
    assert info.value.status == 429 and "QUEUE_TIMEOUT_S" in info.value.message
    assert admission.queued == 0


async def test_a_waiter_that_leaves_does_not_leak_a_place():
    admission = Admission(limit=1, max_queued=5, timeout_s=5)
    release = await admission.acquire()
    waiter = asyncio.create_task(admission.acquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.sleep(0.01)
    release()
    assert (admission.active, admission.queued) == (0, 0)
    again = await admission.acquire()
    again()
    assert admission.active == 0


async def test_a_refusal_says_what_it_is_behind():
    """A chat refused behind a front-end's long title request is told so, not just "at capacity"."""
    admission = Admission(limit=1, max_queued=0, timeout_s=30, who="The local engine")
    release = await admission.acquire("one for up to 1,000 tokens")
    with pytest.raises(ServiceError) as refused:
        await admission.acquire("one for up to 64 tokens")
    message = refused.value.message
    assert message.startswith("The local engine is at capacity (1 request running (one for up to 1,000 tokens, for ")
    assert "and 0 waiting" in message
    release()
    assert (await admission.acquire())  # the place is free again
