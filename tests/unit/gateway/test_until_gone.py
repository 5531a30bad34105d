"""The one place a request's work is cancelled when its client leaves (inference.until_gone).

Each test runs both ways the gateway can learn of it: from vlserve's HTTP protocol (the
connection's `lost` future) and, under other servers, by watching `receive`.
"""

from __future__ import annotations

import asyncio

import pytest

from vlserve.gateway.engine_call import CallContext, ClientGone, until_gone
from vlserve.gateway.observation import Observation


class Client:
    def __init__(self, told_by: str) -> None:
        self._gone = asyncio.Event()
        lost = asyncio.get_running_loop().create_future() if told_by == "connection" else None
        self._lost = lost
        self.context = CallContext(Observation("-"), self._gone.wait, connection_lost=lost)

    def leave(self) -> None:
        if self._lost is not None:
            self._lost.set_result(None)
        else:
            self._gone.set()


@pytest.fixture(params=["connection", "receive"])
async def client(request) -> Client:
    return Client(request.param)


async def test_the_work_is_cancelled_and_cleaned_up_when_the_client_leaves(client):
    cleaned = []

    async def work():
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append(True)

    asyncio.get_running_loop().call_later(0.05, client.leave)
    with pytest.raises(ClientGone):
        await until_gone(work(), client.context)
    assert cleaned == [True]
    assert asyncio.current_task().cancelling() == 0  # the request's task carries on normally
    await asyncio.sleep(0)


async def test_a_result_comes_back_and_nothing_is_left_running(client):
    before = len(asyncio.all_tasks())

    async def work():
        await asyncio.sleep(0.01)
        return 42

    assert await until_gone(work(), client.context) == 42
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before
    client.leave()  # after the answer: nothing cancels the request's task any more
    await asyncio.sleep(0)
    assert asyncio.current_task().cancelling() == 0


async def test_a_cancellation_from_outside_is_not_mistaken_for_the_client_leaving(client):
    started = asyncio.Event()

    async def work():
        started.set()
        await asyncio.sleep(30)

    task = asyncio.ensure_future(until_gone(work(), client.context))
    await started.wait()
    task.cancel()  # e.g. the server shutting down
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_work_that_finishes_despite_the_cancellation_keeps_its_result(client):
    """An opened stream must reach the caller to be closed, even if the client left as it opened."""

    async def work():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "opened"  # swallowed: the result stands

    asyncio.get_running_loop().call_later(0.05, client.leave)
    assert await until_gone(work(), client.context) == "opened"
    assert asyncio.current_task().cancelling() == 0
