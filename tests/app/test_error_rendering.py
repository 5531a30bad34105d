"""Every error the app can answer, in process: OpenAI's envelope with the documented status
and code (the README's errors table), and nothing that leaks internals."""

from __future__ import annotations

import asyncio

import pytest

from vlserve.errors import ErrorKind, ServiceError

from ..scripted_engine import ScriptedEngine
from ..waiting import eventually_async

CHAT = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}


def envelope(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["code"] == code
    assert error["message"] and "Traceback" not in error["message"]
    return error


@pytest.mark.parametrize("body, code, param", [
    (b'{"model": "scripted", "messages": [', "invalid_json", None),
    (b'{"model": "scripted"}', "bad_request", "messages"),
    (b'{"model": "scripted", "messages": [], "temperature": 9}', "bad_request", None),
])
async def test_a_malformed_request_is_a_400(client, body, code, param):
    resp = await client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    error = envelope(resp, 400, code)
    if param:
        assert param in (error["param"] or "")


@pytest.mark.parametrize("part", [{"type": "image_url"}, {"type": "image_url", "image_url": None},
                                  {"type": "video_url"}, {"type": "image_url", "image_url": {"url": ""}}])
async def test_a_media_part_without_a_url_is_a_400(client, part):
    body = {"model": "scripted", "messages": [{"role": "user", "content": [part, {"type": "text", "text": "hi"}]}]}
    error = envelope(await client.post("/v1/chat/completions", json=body), 400, "bad_request")
    assert "no url" in error["message"]


async def test_routes_methods_and_models_that_do_not_exist(client):
    envelope(await client.get("/v1/nothing"), 404, "not_found")
    envelope(await client.get("/v1/chat/completions/"), 404, "not_found")  # never a redirect
    envelope(await client.get("/v1/chat/completions"), 405, "method_not_allowed")
    envelope(await client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-9"}), 404, "model_not_found")


async def test_a_body_over_the_limit_is_a_413_naming_it(app_client):
    async with app_client(MAX_REQUEST_BYTES="2048") as client:
        error = envelope(await client.post("/v1/chat/completions", json={**CHAT, "pad": "x" * 4096}), 413,
                         "payload_too_large")
    assert "2048" in error["message"] or "MAX_REQUEST_BYTES" in error["message"]


async def test_a_body_over_the_limit_found_while_reading_is_a_413_too(app_client):
    async def chunked():  # no Content-Length: the cap is found while the body is read
        yield b'{"model": "scripted", "messages": [{"role": "user", "content": "'
        yield b"x" * 4096 + b'"}]}'

    async with app_client(MAX_REQUEST_BYTES="2048") as client:
        for path in ("/v1/chat/completions", "/v1/completions"):
            error = envelope(await client.post(path, content=chunked()), 413, "payload_too_large")
            assert "MAX_REQUEST_BYTES" in error["message"]


async def test_a_key_is_needed_where_keys_are_set_and_ops_stay_open(app_client):
    async with app_client(API_KEYS="sk-right") as client:
        envelope(await client.post("/v1/chat/completions", json=CHAT), 401, "invalid_api_key")
        wrong = await client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-wrong"})
        envelope(wrong, 401, "invalid_api_key")
        right = await client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-right"})
        assert right.status_code == 200
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/")).status_code == 200  # the playground asks for the key itself


@pytest.mark.parametrize("failure, status, code", [
    (RuntimeError("secret internals"), 500, "internal_error"),
    (ServiceError(ErrorKind.ENGINE_UNAVAILABLE, "The model engine is unreachable.",
                  headers={"Retry-After": "5"}), 503, "engine_unavailable"),
    (ServiceError(ErrorKind.UPSTREAM_TIMEOUT, "The model engine did not answer in time."), 504, "upstream_timeout"),
    (ServiceError(ErrorKind.UPSTREAM_ERROR, "The model engine failed."), 502, "bad_gateway"),
])
async def test_an_engine_failure_is_its_status_with_no_internals(client, engine: ScriptedEngine, failure, status,
                                                                 code):
    engine.fail_with = failure
    error = envelope(await client.post("/v1/chat/completions", json=CHAT), status, code)
    assert "secret" not in error["message"]


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", CHAT),  # the hot route, outside FastAPI
                                        ("/v1/completions", {"model": "scripted", "prompt": "hi"})])
async def test_a_failure_in_a_middleware_is_a_500_envelope_on_every_route(client, monkeypatch, path, body):
    from vlserve.tenancy.quota import Quota

    def broken(self, caller):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(Quota, "ticket", broken)  # the limits middleware's first step
    error = envelope(await client.post(path, json=body), 500, "internal_error")
    assert "secret" not in error["message"]
    assert (await client.get("/health")).status_code == 200  # and it keeps serving


async def test_no_place_in_the_queue_is_a_429_with_retry_after(app_client, engine: ScriptedEngine):
    engine.holding = True
    async with app_client(MAX_CONCURRENT_REQUESTS="1", MAX_QUEUED_REQUESTS="0") as client:
        first = asyncio.create_task(client.post("/v1/chat/completions", json={**CHAT, "stream": True}))
        assert await eventually_async(lambda: len(engine.requests) == 1)  # it holds the one place
        refused = await client.post("/v1/chat/completions", json=CHAT)
        envelope(refused, 429, "overloaded")
        assert int(refused.headers["Retry-After"]) >= 1
        engine.hold.set()
        assert (await first).status_code == 200


async def test_health_is_503_while_the_engine_loads(client, engine: ScriptedEngine):
    engine.ready = False
    resp = await client.get("/health")
    assert resp.status_code == 503 and resp.json()["ready"] is False
    envelope(await client.post("/v1/chat/completions", json=CHAT), 503, "engine_unavailable")
