"""A fault-injecting upstream behind a real gateway: every fault gets its documented answer,
nothing hangs, abandoned requests are cancelled upstream, nothing leaks.

The upstream is the one hand-written fake a gateway test needs: it misbehaves on purpose.
The `model` of each request names the fault. The gateway runs in this process (uvicorn
in a thread) so the test can count its asyncio tasks and in-use upstream connections.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
import threading
import time

import httpx
import openai
import pytest
from aiohttp import web

from vlserve.config import Settings
from vlserve.engines.upstream.engine import UpstreamEngine
from vlserve.server.app import create_app

from ..inprocess import InProcessServer
from ..media_helpers import png
from ..waiting import eventually

pytestmark = pytest.mark.timeout(120)

CHUNK = b'data: {"id":"x","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
MODELS = ["ok", "slow-first-byte", "slow", "stall", "cut", "error500", "error429", "bad-json", "garbage-sse",
          "reset", "endless", "hang", "silent"]


class FaultUpstream:
    def __init__(self) -> None:
        self.active = 0          # handlers still running: a request the gateway failed to cancel stays here
        self.ended: dict[str, float] = {}
        self.loop = asyncio.new_event_loop()
        self.port = 0

    async def models(self, _):
        return web.json_response({"data": [{"id": m} for m in MODELS]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.active += 1
        try:
            return await self._fault(request, body["model"], body.get("stream", False))
        finally:
            self.active -= 1
            self.ended[body["model"]] = time.monotonic()

    async def _fault(self, request, fault: str, stream: bool) -> web.StreamResponse:
        if fault == "slow-first-byte":
            await asyncio.sleep(3)
        if fault == "error500":
            return web.Response(status=500, text="Internal Server Error")
        if fault == "error429":
            return web.json_response({"message": "busy", "object": "error"}, status=429, headers={"Retry-After": "7"})
        if fault == "bad-json":
            return web.Response(status=200, text='{"choices": [', content_type="application/json")
        if fault == "reset":
            sock = request.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            request.transport.abort()  # RST
            return web.Response()
        if fault == "hang" or (fault == "slow" and not stream):
            while not request.transport.is_closing():  # notices the gateway hanging up
                await asyncio.sleep(0.02)
            return web.Response()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if fault == "silent":  # headers, then not a byte until the gateway hangs up
            while not request.transport.is_closing():
                await asyncio.sleep(0.02)
            return response
        if fault == "garbage-sse":
            await response.write(b"<html>this is not SSE</html>\n\n")
            return response
        await response.write(CHUNK)
        if fault == "stall":
            while not request.transport.is_closing():
                await asyncio.sleep(0.02)
            return response
        if fault == "cut":
            request.transport.close()
            return response
        if fault == "endless":
            while not request.transport.is_closing():
                await response.write(CHUNK)
                await asyncio.sleep(0.02)
            return response
        await response.write(b"data: [DONE]\n\n")
        return response

    def start(self) -> FaultUpstream:
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            app = web.Application()
            app.add_routes([web.get("/v1/models", self.models), web.post("/v1/chat/completions", self.chat)])
            runner = web.AppRunner(app)
            self.loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)
        return self


@pytest.fixture(scope="module")
def upstream():
    return FaultUpstream().start()


def with_spec_version(app, version: str):
    """The app as a server that reports this ASGI spec version would run it."""
    async def wrapped(scope, receive, send):
        scope["asgi"] = {**scope.get("asgi", {}), "spec_version": version}
        await app(scope, receive, send)
    wrapped.state = app.state
    return wrapped


@pytest.fixture(scope="module", params=["2.3", "2.4"])
def gateway(upstream, request):
    settings = Settings(UPSTREAM_BASE_URL=f"http://127.0.0.1:{upstream.port}", UPSTREAM_TIMEOUT_S=2,
                        UPSTREAM_FIRST_BYTE_TIMEOUT_S=1.0, UPSTREAM_IDLE_TIMEOUT_S=2)
    engine = UpstreamEngine(settings)
    app = create_app(settings, engine=engine)
    server = InProcessServer(with_spec_version(app, request.param)).start()
    server.engine = engine
    server.state = app.state
    yield server.wait_healthy()
    server.stop()


def post(gateway, model: str, stream: bool = False, timeout: float = 10) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/chat/completions", timeout=timeout,
                      json={"model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]})


def final_event(resp: httpx.Response) -> dict:
    events = [e for e in resp.content.split(b"\n\n") if e.strip()]
    return json.loads(events[-1][6:])


@pytest.mark.parametrize("model, stream, status, code", [
    ("slow-first-byte", True, 504, "upstream_timeout"),
    ("slow", False, 504, "upstream_timeout"),
    ("error500", False, 502, "bad_gateway"),
    ("error500", True, 502, "bad_gateway"),
    ("error429", False, 429, "overloaded"),
    ("bad-json", False, 502, "bad_gateway"),
    ("reset", False, 503, "engine_unavailable"),
    ("reset", True, 503, "engine_unavailable"),
])
def test_faults_before_the_answer_starts(gateway, model, stream, status, code):
    started = time.monotonic()
    resp = post(gateway, model, stream)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code
    assert time.monotonic() - started < 5  # nothing hangs
    if model == "error429":
        assert resp.headers["retry-after"] == "7"


def held(gateway) -> tuple[int, int, int]:
    """(admission places held, replica requests in flight, open streams) inside the gateway."""
    inference = gateway.state.vlserve.inference
    return gateway.call(lambda: (inference.admission.active, gateway.engine.replicas.replicas[0].in_flight,
                                 inference.open_streams))


def released(gateway) -> bool:
    return eventually(lambda: held(gateway) == (0, 0, 0))


@pytest.mark.parametrize("model, leave_after_chunks", [("silent", 0), ("endless", 2)])
def test_a_stream_left_before_or_after_its_first_chunk_gives_everything_back(gateway, upstream, model,
                                                                            leave_after_chunks):
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", timeout=10, json={
            "model": model, "stream": True, "messages": [{"role": "user", "content": "x"}]}) as resp:
        assert resp.status_code == 200
        chunks = resp.iter_bytes()
        for _ in range(leave_after_chunks):
            next(chunks)
        assert held(gateway) == (1, 1, 1)
    assert released(gateway), held(gateway)
    assert eventually(lambda: upstream.active == 0), "the upstream request was never hung up on"


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_left_before_the_upstream_answered_gives_its_replica_slot_back(gateway, upstream, stream):
    with pytest.raises(httpx.ReadTimeout):
        post(gateway, "hang" if not stream else "slow-first-byte", stream=stream, timeout=0.3)
    assert released(gateway), held(gateway)


@pytest.mark.parametrize("model, code", [("stall", "upstream_timeout"), ("cut", "bad_gateway"),
                                         ("garbage-sse", "bad_gateway")])
def test_faults_after_the_stream_started_end_with_an_error_event(gateway, model, code):
    resp = post(gateway, model, stream=True)
    assert resp.status_code == 200
    assert final_event(resp)["error"]["code"] == code


def test_a_stream_with_images_silent_before_its_first_token_is_a_504(gateway):
    """Such a stream is held until its first token (so a refusal can be retried smaller):
    an engine silent for UPSTREAM_IDLE_TIMEOUT_S by then gets a status, not an event."""
    resp = httpx.post(f"{gateway.url}/v1/chat/completions", timeout=10, json={
        "model": "silent", "stream": True, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png()).decode()}}]}]})
    assert resp.status_code == 504 and resp.json()["error"]["code"] == "upstream_timeout"
    assert "UPSTREAM_IDLE_TIMEOUT_S" in resp.json()["error"]["message"]
    assert released(gateway), held(gateway)


@pytest.mark.parametrize("model, code", [("stall", "upstream_timeout"), ("cut", "bad_gateway")])
def test_a_broken_responses_stream_ends_with_error_and_response_failed(gateway, model, code):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    events = list(client.responses.create(model=model, input="x", stream=True))
    assert [event.type for event in events[-2:]] == ["error", "response.failed"]
    assert events[-2].code == code and events[-1].response.error.code == "server_error"  # OpenAI's codes only
    assert events[-1].response.status == "failed"
    assert released(gateway), held(gateway)


def test_a_client_that_leaves_a_responses_stream_gives_everything_back(gateway, upstream):
    with httpx.stream("POST", f"{gateway.url}/v1/responses", timeout=10,
                      json={"model": "endless", "stream": True, "input": "x"}) as resp:
        assert resp.status_code == 200
        chunks = resp.iter_bytes()
        next(chunks), next(chunks)
        assert held(gateway) == (1, 1, 1)
    assert released(gateway), held(gateway)


def test_the_sdk_raises_on_a_broken_stream(gateway):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="cut", messages=[{"role": "user", "content": "x"}], stream=True):
            pass


def test_a_client_that_leaves_mid_stream_cancels_the_upstream_within_a_second(gateway, upstream):
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", timeout=10, json={
            "model": "endless", "stream": True, "messages": [{"role": "user", "content": "x"}]}) as resp:
        chunks = resp.iter_bytes()
        next(chunks), next(chunks)
        left = time.monotonic()
    assert eventually(lambda: upstream.ended.get("endless", 0) >= left), "the upstream was never cancelled"
    assert upstream.ended["endless"] <= left + 1.0


def test_a_client_that_leaves_a_non_streamed_request_cancels_it_upstream(gateway, upstream):
    with pytest.raises(httpx.ReadTimeout):
        post(gateway, "hang", timeout=0.3)
    left = time.monotonic()
    assert eventually(lambda: upstream.ended.get("hang", 0) > left - 0.3), "the upstream was never cancelled"
    assert upstream.ended["hang"] <= left + 1.0


def test_nothing_leaks(gateway, upstream):
    baseline = gateway.task_count()
    for model, stream in [("ok", True), ("stall", True), ("cut", True), ("slow", False), ("error500", False),
                          ("garbage-sse", True), ("reset", False)] * 3:
        post(gateway, model, stream)
    assert eventually(lambda: gateway.task_count() <= baseline), gateway.task_count()
    assert eventually(lambda: gateway.call(lambda: len(gateway.engine.transport._pooled.connector._acquired)) == 0)
    assert eventually(lambda: upstream.active == 0)  # every abandoned upstream request was hung up on
    assert post(gateway, "ok", stream=True).status_code == 200  # and it still answers
