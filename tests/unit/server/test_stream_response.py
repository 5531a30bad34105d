"""The SSE response closes its engine stream whatever ends it: this is what gives back an
admission place and a replica slot, and cancels the generation."""

from __future__ import annotations

import asyncio

import pytest

from vlserve.engines.base import EngineStream
from vlserve.server.routes.streaming import EngineStreamResponse

SCOPE = {"type": "http", "asgi": {"spec_version": "2.4"}}


def stream_of(chunks) -> tuple[EngineStream, list[str]]:
    closed: list[str] = []
    stream = EngineStream(chunks, on_close=lambda: closed.append("closed"))
    return stream, closed


async def never_disconnects():
    await asyncio.Event().wait()


async def run(stream, receive=never_disconnects, send=None):
    sent = []

    async def collect(message):
        sent.append(message)

    await asyncio.wait_for(EngineStreamResponse(stream)(SCOPE, receive, send or collect), 5)
    return sent


async def test_a_finished_stream_is_closed():
    async def chunks():
        yield b"data: 1\n\n"
        yield b"data: [DONE]\n\n"

    stream, closed = stream_of(chunks())
    sent = await run(stream)
    assert [m.get("body") for m in sent if m["type"] == "http.response.body"][:2] == [b"data: 1\n\n", b"data: [DONE]\n\n"]
    assert closed == ["closed"]


async def test_a_relay_that_raises_still_closes_its_stream():
    async def chunks():
        yield b"data: 1\n\n"
        raise RuntimeError("relay broke")

    stream, closed = stream_of(chunks())
    with pytest.raises(RuntimeError):
        await run(stream)
    assert closed == ["closed"]


async def test_a_client_gone_before_the_first_chunk_closes_a_silent_stream():
    async def chunks():
        await asyncio.Event().wait()  # the engine says nothing
        yield b""

    async def gone():
        return {"type": "http.disconnect"}

    stream, closed = stream_of(chunks())
    await run(stream, receive=gone)
    assert closed == ["closed"]


async def test_a_send_that_fails_because_the_client_left_closes_the_stream():
    async def chunks():
        while True:
            yield b"data: x\n\n"
            await asyncio.sleep(0)

    async def broken_pipe(message):
        if message["type"] == "http.response.body":
            raise OSError("client left")  # how servers on ASGI spec 2.4 report it

    stream, closed = stream_of(chunks())
    await run(stream, send=broken_pipe)
    assert closed == ["closed"]
