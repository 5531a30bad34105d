"""The upstream engine's attempts, against a scripted transport: failover order, the one
resend of a request whose connection closed, a refused field learned, and what is never
sent twice. No sockets, no waiting: each test runs in milliseconds.

The real transport and real sockets are covered by test_upstream_faults.py and the
integration tests; this is the decision logic on its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from multidict import CIMultiDict

from vlserve.config import Settings
from vlserve.engines.base import EngineRequest
from vlserve.engines.upstream.engine import UpstreamEngine
from vlserve.engines.upstream.replicas import Lease
from vlserve.errors import ErrorKind, ServiceError

A, B = "http://a.test:1", "http://b.test:2"
ANSWER = {"id": "x", "object": "chat.completion", "model": "m",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}


class Chunks:
    def __init__(self, body: bytes) -> None:
        self._body = body

    async def iter_any(self) -> AsyncIterator[bytes]:
        yield self._body


@dataclass
class ScriptedResponse:
    status: int
    body: bytes
    headers: CIMultiDict = field(default_factory=CIMultiDict)
    released: bool = False

    @property
    def content(self) -> Chunks:
        return Chunks(self.body)

    async def read(self) -> bytes:
        return self.body

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.released = True


def refused(host: str) -> aiohttp.ClientConnectorError:
    key = ConnectionKey(host, 1, False, None, None, None, None, None)
    return aiohttp.ClientConnectorError(key, OSError(111, "Connection refused"))  # type: ignore[arg-type]


def answer(status: int = 200, body: object = ANSWER) -> Callable[[], ScriptedResponse]:
    return lambda: ScriptedResponse(status, json.dumps(body).encode())


def fail(exc: Callable[[], BaseException]) -> Callable[[], ScriptedResponse]:
    def raise_it() -> ScriptedResponse:
        raise exc()
    return raise_it


@dataclass
class Sent:
    url: str
    body: dict
    new_connection: bool


class ScriptedTransport:
    """Each replica answers from its own script, one step per request it receives."""

    probe_session = None

    def __init__(self, scripts: dict[str, list[Callable[[], ScriptedResponse]]]) -> None:
        self.scripts = {base: list(steps) for base, steps in scripts.items()}
        self.sent: list[Sent] = []

    async def post(self, url: str, data: bytes, timeout: aiohttp.ClientTimeout, *,
                   new_connection: bool = False) -> ScriptedResponse:
        self.sent.append(Sent(url, json.loads(data), new_connection))
        base = url.split("/v1/")[0]
        step = self.scripts[base].pop(0)
        if step is HANG:  # bounded by the timeout's total, as aiohttp bounds it
            async with asyncio.timeout(timeout.total):
                await asyncio.Event().wait()
        return step()

    async def close(self) -> None:
        pass


HANG = answer()  # a step that never answers (the first-byte timeout must end it)


async def engine_with(scripts: dict[str, list], **settings) -> tuple[UpstreamEngine, ScriptedTransport]:
    transport = ScriptedTransport(scripts)
    engine = UpstreamEngine(Settings(UPSTREAM_BASE_URL=",".join(scripts), **settings),
                            transport=lambda _: transport)
    await engine.start()
    for replica in engine.replicas.replicas:  # as if the probe had found them
        replica.ready, replica.models = True, ["m"]
    return engine, transport


def chat(**extra) -> EngineRequest:
    return EngineRequest({"model": "m", "messages": [{"role": "user", "content": "x"}], **extra})


def leases(engine: UpstreamEngine) -> list[int]:
    return [replica.in_flight for replica in engine.replicas.replicas]


def busier(engine: UpstreamEngine, url: str) -> Lease:
    """A request held on this replica, so the next one goes to the other (the least busy)."""
    return Lease(next(r for r in engine.replicas.replicas if r.base_url == url))


async def test_a_refused_connection_fails_over_and_takes_the_replica_out():
    engine, transport = await engine_with({A: [fail(lambda: refused("a"))], B: [answer()]})
    held = busier(engine, B)
    assert (await engine.complete(chat()))["choices"][0]["message"]["content"] == "ok"
    held.release()
    assert [sent.url.split("/v1/")[0] for sent in transport.sent] == [A, B]
    assert not engine.replicas.replicas[0].ready and engine.replicas.replicas[1].ready
    assert leases(engine) == [0, 0]


async def test_a_5xx_fails_over_once_when_another_replica_is_ready():
    engine, transport = await engine_with({A: [answer(500, {"error": "boom"})], B: [answer()]})
    held = busier(engine, B)
    await engine.complete(chat())
    held.release()
    assert [sent.url.split("/v1/")[0] for sent in transport.sent] == [A, B]
    assert leases(engine) == [0, 0]


async def test_with_one_replica_a_5xx_is_the_clients_502_and_is_not_sent_again():
    engine, transport = await engine_with({A: [answer(500, {"error": "boom"})]})
    with pytest.raises(ServiceError) as info:
        await engine.complete(chat())
    assert info.value.status == 502 and len(transport.sent) == 1
    assert engine.replicas.replicas[0].ready  # the last replica is not taken out by a request
    assert leases(engine) == [0]


async def test_a_timeout_is_never_sent_twice():
    engine, transport = await engine_with({A: [HANG], B: [answer()]}, UPSTREAM_TIMEOUT_S=0.05)
    held = busier(engine, B)
    with pytest.raises(ServiceError) as info:
        await engine.complete(chat())
    held.release()
    assert info.value.kind is ErrorKind.UPSTREAM_TIMEOUT
    assert len(transport.sent) == 1  # it may still be generating there: B never gets a copy
    assert leases(engine) == [0, 0]


async def test_a_connection_closed_before_any_answer_is_resent_once_on_a_new_connection():
    engine, transport = await engine_with({A: [fail(aiohttp.ServerDisconnectedError), answer()]})
    await engine.complete(chat())
    assert [sent.new_connection for sent in transport.sent] == [False, True]
    assert transport.sent[0].body == transport.sent[1].body


async def test_a_connection_closed_twice_is_the_engine_unreachable():
    engine, transport = await engine_with({A: [fail(aiohttp.ServerDisconnectedError),
                                               fail(aiohttp.ServerDisconnectedError)]})
    with pytest.raises(ServiceError) as info:
        await engine.complete(chat())
    assert info.value.status == 503 and len(transport.sent) == 2


async def test_a_refused_field_is_learned_and_the_request_succeeds_without_it():
    refusal = {"error": {"message": "mm_processor_kwargs is not allowed unless --trust-request-mm-kwargs",
                         "type": "BadRequestError"}}
    engine, transport = await engine_with({A: [answer(400, refusal), answer(), answer()]})
    request = chat()
    request.image_pixels = (65_536, 1_310_720)
    await engine.complete(request)
    await engine.complete(request)
    assert ["mm_processor_kwargs" in sent.body for sent in transport.sent] == [True, False, False]
    assert engine.replicas.replicas[0].refused_fields == {"mm_processor_kwargs"}


async def test_a_client_error_the_gateway_did_not_cause_is_passed_on_once():
    engine, transport = await engine_with({A: [answer(400, {"error": {"message": "temperature is too high"}})],
                                           B: [answer()]})
    held = busier(engine, B)
    with pytest.raises(ServiceError) as info:
        await engine.complete(chat())
    held.release()
    assert info.value.status == 400 and "temperature" in info.value.message and len(transport.sent) == 1
