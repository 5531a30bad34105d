"""UpstreamEngine against a fault-injecting upstream on 127.0.0.1.

This is the one place a hand-written upstream belongs: it misbehaves on purpose, in
ways a real engine does only on a bad day. The model name in a request picks the fault.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from tests.local_site import serve_app
from vlserve.config import Settings
from vlserve.engines.base import EngineRequest
from vlserve.engines.upstream.engine import UpstreamEngine
from vlserve.errors import ErrorKind, ServiceError

SERVED = web.AppKey("served", list)
CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'


async def chat_handler(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    fault = body["model"]
    if fault == "slow":
        await asyncio.sleep(2)
    if fault == "reused":  # every kept-alive connection is closed as its second request arrives
        if request.transport in request.app[SERVED]:
            request.transport.close()
            return web.Response()
        request.app[SERVED].append(request.transport)
    if fault == "error500":
        return web.Response(status=500, text="Internal Server Error")
    if fault == "garbage":
        return web.Response(status=200, text="<html>proxy error</html>")
    if fault in ("midstream", "stall"):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(CHUNK)
        if fault == "stall":
            await asyncio.sleep(2)
        request.transport.close()  # connection dropped mid-stream
        return response
    return web.json_response({"id": "x", "object": "chat.completion", "model": fault,
                              "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                           "finish_reason": "stop"}]})


async def models_handler(_: web.Request) -> web.Response:
    return web.json_response({"data": [{"id": m} for m in ("m", "slow", "error500", "garbage", "midstream",
                                                            "stall", "reused")]})


@pytest.fixture
async def upstream():
    app = web.Application()
    app[SERVED] = []  # connections that have answered a "reused" request
    app.add_routes([web.get("/v1/models", models_handler),
                    web.post("/v1/chat/completions", chat_handler)])
    async with serve_app(app) as served:
        yield served


@pytest.fixture
async def engine(upstream):
    engine = UpstreamEngine(Settings(UPSTREAM_BASE_URL=upstream[1], UPSTREAM_TIMEOUT_S=0.5, UPSTREAM_IDLE_TIMEOUT_S=0.5))
    await engine.start()
    assert await engine.wait_ready(5)
    yield engine
    await engine.close()


def request(model: str, **extra) -> EngineRequest:
    return EngineRequest({"model": model, "messages": [{"role": "user", "content": "x"}], **extra})


async def error_of(awaitable) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        await awaitable
    return info.value


async def test_a_kept_alive_connection_closed_under_a_request_is_resent_on_a_new_one(engine, upstream):
    # The upstream's idle timer firing as the gateway reuses the connection: the request
    # must not fail, neither whole nor streamed.
    for _ in range(3):
        answer = await engine.complete(request("reused"))
        assert answer["choices"][0]["message"]["content"] == "ok"
    stream = await engine.open_stream(request("reused", stream=True))
    await stream.aclose()
    assert len(upstream[0].app[SERVED]) >= 3  # new connections answered what the old ones dropped


async def test_a_request_with_an_integer_beyond_64_bits_is_forwarded(engine):
    # orjson encodes the engine's request and refuses such integers; json takes over.
    assert (await engine.complete(request("m", seed=2**70)))["choices"][0]["message"]["content"] == "ok"


async def test_a_healthy_answer_passes_through(engine):
    assert (await engine.complete(request("m")))["choices"][0]["message"]["content"] == "ok"
    assert "m" in engine.status().models


async def test_slow_upstream_is_504(engine):
    assert (await error_of(engine.complete(request("slow")))).kind is ErrorKind.UPSTREAM_TIMEOUT


async def test_upstream_500_is_502(engine):
    error = await error_of(engine.complete(request("error500")))
    assert error.status == 502 and "500" in error.message


async def test_non_json_answer_is_502(engine):
    assert (await error_of(engine.complete(request("garbage")))).status == 502


@pytest.mark.parametrize("fault, kind", [("midstream", "bad_gateway"), ("stall", "upstream_timeout")])
async def test_stream_failures_end_with_an_error_event(engine, fault, kind):
    stream = await engine.open_stream(request(fault, stream=True))
    received = b"".join([chunk async for chunk in stream])
    await stream.aclose()
    assert received.startswith(CHUNK)
    last = received.rstrip(b"\n").split(b"\n\n")[-1]
    assert json.loads(last[6:])["error"]["code"] == kind


async def test_upstream_gone_is_503(upstream, engine):
    await upstream[0].cleanup()  # the engine stops listening after it was found ready
    error = await error_of(engine.complete(request("m")))
    assert error.kind is ErrorKind.ENGINE_UNAVAILABLE and error.headers.get("Retry-After")
