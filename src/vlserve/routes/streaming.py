"""Response helpers shared by routers: SSE responses and cancel-on-disconnect."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from ..engines.base import EngineStream

T = TypeVar("T")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
CLIENT_CLOSED_REQUEST = 499  # nginx's convention; the client never sees it


def sse_response(stream: EngineStream, services) -> StreamingResponse:
    # The background task runs when the response ends for any reason, client gone included.
    return StreamingResponse(services.streams.relay(stream), media_type="text/event-stream", headers=SSE_HEADERS,
                             background=BackgroundTask(stream.aclose))


async def admitted(services, work: Awaitable[T]) -> T:
    """Run engine work inside an admission place (429 when there is none to be had)."""
    try:
        release = await services.admission.acquire()
    except BaseException:
        if inspect.iscoroutine(work):
            work.close()  # refused before it started: no "never awaited" warning
        raise
    try:
        return await work
    finally:
        release()


async def admitted_stream(services, open_stream: Callable[[], Awaitable[EngineStream]]) -> EngineStream:
    """Open a stream inside an admission place, held until the stream is closed."""
    release = await services.admission.acquire()
    try:
        stream = await open_stream()
    except BaseException:
        release()
        raise
    stream.add_close_callback(release)
    return stream


def report_stream_usage(stream: EngineStream, obs) -> EngineStream:
    stream.add_close_callback(lambda: obs.add_usage(stream.usage))
    return stream


class ClientGone(Exception):
    pass


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first (the body is read by now)."""
    task = asyncio.ensure_future(work)

    async def wait_for_disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(wait_for_disconnect())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ClientGone()
    return task.result()


def client_gone_response() -> Response:
    return Response(status_code=CLIENT_CLOSED_REQUEST)
