"""Script calls to Redis sharing round trips.

One round trip at a time: the calls asked for while it is on its way (the limit checks of
the requests that arrived, the settles of those that ended) go together in the next one,
a pipeline, as soon as it is back; a call asked for when none is on its way goes at once.
Each call still runs alone and atomically inside Redis, in the order asked, so nothing
about the limits changes but the gateway's cost: a round trip through redis-py costs the
gateway ~100 µs of CPU whatever it carries (bench/RESULTS.md). Under load the trips fill
up by themselves; alone, a call waits for nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

Call = tuple[AsyncScript, list[str], list[str | int]]  # a script, its keys and arguments


class SharedTrips:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._asked: list[tuple[Call, asyncio.Future[Any]]] = []  # for the next round trip
        self._trips: asyncio.Task[None] | None = None  # sends trips while calls are asked for

    def ask(self, script: AsyncScript, keys: list[str], args: list[str | int]) -> asyncio.Future[Any]:
        """The call's reply, from the next round trip. A call Redis refused (a script's
        limit, memory full) raises its error; an unreachable Redis fails every call of the
        trip alike."""
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._asked.append(((script, keys, args), reply))
        if self._trips is None or self._trips.done():
            self._trips = asyncio.get_running_loop().create_task(self._send_trips())
        return reply

    async def _send_trips(self) -> None:
        await asyncio.sleep(0)  # the other calls asked for in this round of the loop come too
        while self._asked:
            asked, self._asked = self._asked, []
            await self._trip(asked)

    async def _trip(self, asked: list[tuple[Call, asyncio.Future[Any]]]) -> None:
        try:
            replies = await self._run([call for call, _ in asked])
        except asyncio.CancelledError:  # the gateway is stopping
            for _, reply in asked:
                reply.cancel()
            raise
        except Exception as exc:  # Redis out of reach
            replies = [exc] * len(asked)
        for (_, future), reply in zip(asked, replies, strict=True):
            if future.done():  # its request was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _run(self, calls: list[Call]) -> list[Any]:
        """The calls' replies (an error in its place); loads the scripts Redis does not
        know (after a restart or a SCRIPT FLUSH) and runs those calls again."""
        replies = await self._pipeline(calls)
        missing = [index for index, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            for script in {id(calls[i][0]): calls[i][0] for i in missing}.values():
                await self._client.script_load(script.script)
            for index, reply in zip(missing, await self._pipeline([calls[i] for i in missing]), strict=True):
                replies[index] = reply
        return replies

    async def _pipeline(self, calls: list[Call]) -> list[Any]:
        # EVALSHA straight into the pipeline: a script passed to a pipeline makes it ask
        # SCRIPT EXISTS first, a second round trip every time.
        async with self._client.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=False)
