"""Extraction against a JSON Schema: guided decoding asked for, validation, one repair, 422.

The upstream here is scripted: it records what the UpstreamEngine sends and answers
with prepared texts, so the success and repair paths can be driven on purpose (the
tiny random model never writes valid JSON).
"""

from __future__ import annotations

import asyncio
import base64

import pytest
from aiohttp import web

from tests.local_site import serve_app
from tests.media_helpers import png
from vlserve.admission import Admission
from vlserve.analysis import TaskInput
from vlserve.config import Settings
from vlserve.engines.upstream.engine import UpstreamEngine
from vlserve.errors import ServiceError
from vlserve.gateway.catalog import ModelCatalog
from vlserve.gateway.engine_call import CallContext, Inference
from vlserve.gateway.observation import Observation
from vlserve.gateway.oneshot import analyze
from vlserve.gateway.request_builder import RequestBuilder
from vlserve.media import MediaNormalizer, MediaPolicy

SCHEMA = {"type": "object", "properties": {"total": {"type": "number"}, "currency": {"type": "string"}},
          "required": ["total", "currency"], "additionalProperties": False}


class ScriptedUpstream:
    def __init__(self) -> None:
        self.answers: list[str] = []
        self.requests: list[dict] = []

    async def models(self, _):
        return web.json_response({"data": [{"id": "scripted"}]})

    async def chat(self, request):
        self.requests.append(await request.json())
        return web.json_response({"model": "scripted", "usage": {"prompt_tokens": 10, "completion_tokens": 5,
                                                                 "total_tokens": 15},
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": self.answers.pop(0)}}]})


@pytest.fixture
async def scripted():
    upstream = ScriptedUpstream()
    app = web.Application()
    app.add_routes([web.get("/v1/models", upstream.models), web.post("/v1/chat/completions", upstream.chat)])
    async with serve_app(app) as (_, url):
        yield upstream, url


@pytest.fixture
async def services(scripted, request):
    guided = getattr(request, "param", "true")
    settings = Settings(UPSTREAM_BASE_URL=scripted[1], UPSTREAM_GUIDED_DECODING=guided)
    engine = UpstreamEngine(settings)
    await engine.start()
    assert await engine.wait_ready(5)
    media = MediaNormalizer(MediaPolicy.from_settings(settings))
    yield Inference(engine, Admission(4, 4, 5)), RequestBuilder(settings, ModelCatalog(settings, engine), media)
    await engine.close()


async def run(services, schema=SCHEMA):
    inference, builder = services
    image = await builder.media.image(base64.b64encode(png()).decode())
    never_gone = CallContext(Observation("test"), asyncio.Event().wait)
    return await analyze(inference, builder, never_gone, spec=TaskInput("extract"), images=[image], model=None,
                         sampling={}, schema=schema)


async def test_valid_answer_and_guided_decoding_requested(scripted, services):
    upstream = scripted[0]
    upstream.answers = ['```json\n{"total": 42.5, "currency": "EUR"}\n```']
    response = await run(services)
    assert response.result == {"total": 42.5, "currency": "EUR"}
    sent = upstream.requests[0]
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "extraction", "schema": SCHEMA}}
    assert '"currency"' in sent["messages"][-1]["content"][-1]["text"]  # the schema is in the prompt too


async def test_one_repair_turn(scripted, services):
    upstream = scripted[0]
    upstream.answers = ['{"total": "forty-two"}', '{"total": 42, "currency": "USD"}']
    response = await run(services)
    assert response.result == {"total": 42, "currency": "USD"}
    repair = upstream.requests[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": '{"total": "forty-two"}'}
    assert "not valid against the schema" in repair[-1]["content"]
    assert response.usage.total_tokens == 30  # both turns counted


async def test_still_invalid_is_422_with_the_raw_text(scripted, services):
    scripted[0].answers = ["no idea", "still no idea"]
    with pytest.raises(ServiceError) as info:
        await run(services)
    assert info.value.status == 422 and info.value.body()["error"]["raw_output"] == "still no idea"


@pytest.mark.parametrize("services", ["false"], indirect=True)
async def test_guided_decoding_can_be_switched_off(scripted, services):
    scripted[0].answers = ['{"total": 1, "currency": "EUR"}']
    await run(services)
    assert "response_format" not in scripted[0].requests[0]


@pytest.mark.parametrize("schema", [None, {}, {"type": "no-such-type"}, ["not", "an", "object"]])
async def test_bad_schemas_are_400(services, schema):
    with pytest.raises(ServiceError) as info:
        await run(services, schema)
    assert info.value.status == 400 and info.value.param == "schema"


class Canary:
    """An HTTP server that must never be asked for anything."""

    def __init__(self) -> None:
        self.hits = 0

    async def handle(self, request):
        self.hits += 1
        return web.json_response({"type": "string", "secret": "do not read me"})


@pytest.fixture
async def canary():
    served = Canary()
    app = web.Application()
    app.router.add_get("/{tail:.*}", served.handle)
    async with serve_app(app) as (_, url):
        yield served, url


@pytest.mark.parametrize("ref", ["{url}/schema.json", "{url}/schema.json#/properties/a", "file:///etc/passwd",
                                 "#/definitions/missing", "#/$defs/nope", "other.json"])
async def test_a_ref_that_does_not_resolve_inside_the_schema_is_400_and_nothing_is_fetched(services, canary, ref):
    served, url = canary
    schema = {"type": "object", "properties": {"total": {"$ref": ref.format(url=url)}}}
    with pytest.raises(ServiceError) as info:
        await run(services, schema)
    assert info.value.status == 400 and info.value.param == "schema" and ref.format(url=url) in info.value.message
    assert served.hits == 0


async def test_refs_inside_the_schema_still_work(scripted, services):
    scripted[0].answers = ['{"total": 42, "currency": "EUR"}']
    schema = {"$defs": {"money": {"type": "number"}}, "type": "object",
              "properties": {"total": {"$ref": "#/$defs/money"}, "currency": {"type": "string"}},
              "required": ["total"]}
    assert (await run(services, schema)).result == {"total": 42, "currency": "EUR"}


async def test_a_catastrophic_pattern_cannot_stall_validation(scripted, services):
    """Found by review: `^(a+)+$` against 25 a's and a '!' took seconds in Python's `re`,
    holding the GIL; validation uses a linear-time engine."""
    import time

    scripted[0].answers = ['{"name": "' + "a" * 5000 + '!"}', '{"name": "' + "a" * 5000 + '!"}']
    schema = {"type": "object", "properties": {"name": {"not": {"pattern": "^(a+)+$"}, "type": "string"}}}
    started = time.monotonic()
    response = await run(services, schema)
    assert time.monotonic() - started < 2 and response.result["name"].endswith("!")


async def test_a_schema_nested_too_deeply_is_a_400(services):
    schema: dict = {"type": "object"}
    for _ in range(2000):
        schema = {"type": "object", "properties": {"a": schema}}
    with pytest.raises(ServiceError) as info:
        await run(services, schema)
    assert info.value.status == 400 and info.value.param == "schema" and "deeply" in info.value.message
