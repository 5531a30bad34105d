"""The one place a request's work is cancelled when its client leaves (inference.until_gone)."""

from __future__ import annotations

import asyncio

import pytest

from vlserve.gateway.engine_call import CallContext, ClientGone, until_gone
from vlserve.gateway.observation import Observation


def context(gone: asyncio.Event) -> CallContext:
    return CallContext(Observation("-"), gone.wait)


async def test_the_work_is_cancelled_and_cleaned_up_when_the_client_leaves():
    gone, cleaned = asyncio.Event(), []

    async def work():
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append(True)

    asyncio.get_running_loop().call_later(0.05, gone.set)
    with pytest.raises(ClientGone):
        await until_gone(work(), context(gone))
    assert cleaned == [True]
    assert asyncio.current_task().cancelling() == 0  # the request's task carries on normally
    await asyncio.sleep(0)


async def test_a_result_comes_back_and_nothing_is_left_running():
    before = len(asyncio.all_tasks())

    async def work():
        await asyncio.sleep(0.01)
        return 42

    assert await until_gone(work(), context(asyncio.Event())) == 42
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before


async def test_a_cancellation_from_outside_is_not_mistaken_for_the_client_leaving():
    started = asyncio.Event()

    async def work():
        started.set()
        await asyncio.sleep(30)

    task = asyncio.ensure_future(until_gone(work(), context(asyncio.Event())))
    await started.wait()
    task.cancel()  # e.g. the server shutting down
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_work_that_finishes_despite_the_cancellation_keeps_its_result():
    """An opened stream must reach the caller to be closed, even if the client left as it opened."""
    gone = asyncio.Event()

    async def work():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "opened"  # swallowed: the result stands

    asyncio.get_running_loop().call_later(0.05, gone.set)
    assert await until_gone(work(), context(gone)) == "opened"
    assert asyncio.current_task().cancelling() == 0
