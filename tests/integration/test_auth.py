"""API keys on every route, through a real server, with the openai SDK and httpx."""

from __future__ import annotations

import httpx
import openai
import pytest

from .conftest import KEYS

ROUTES = [
    ("GET", "/v1/models", {}),
    ("GET", "/v1/models/qwen3-vl-tiny-random", {}),
    ("POST", "/v1/completions", {"json": {"model": "qwen3-vl-tiny-random", "max_tokens": 2, "prompt": "hi"}}),
    ("POST", "/v1/responses", {"json": {"model": "qwen3-vl-tiny-random", "max_output_tokens": 2, "input": "hi"}}),
    ("POST", "/v1/chat/completions", {"json": {"model": "qwen3-vl-tiny-random", "max_tokens": 2,
                                               "messages": [{"role": "user", "content": "hi"}]}}),
    ("POST", "/infer", {"json": {"prompt": "hi", "max_tokens": 2}}),
    ("POST", "/infer/upload", {"data": {"prompt": "hi", "max_tokens": "2"}}),
    ("POST", "/analyze", {"json": {"task": "caption", "image": "AAAA", "max_tokens": 2}}),
    ("POST", "/analyze/upload", {"data": {"task": "caption"}, "files": {"image": ("a.png", b"x", "image/png")}}),
    ("GET", "/gpu/status", {}),
]


def call(server, method, path, kwargs, headers=None) -> httpx.Response:
    return httpx.request(method, f"{server.url}{path}", headers=headers or {}, timeout=30, **kwargs)


@pytest.mark.parametrize("method, path, kwargs", ROUTES)
@pytest.mark.parametrize("headers, message", [
    ({}, "Missing API key"),
    ({"Authorization": "Bearer sk-wrong"}, "Incorrect API key"),
    ({"Authorization": f"Bearer {KEYS[0]}x"}, "Incorrect API key"),
    ({"Authorization": KEYS[0]}, "Missing API key"),                  # no scheme
    ({"X-API-Key": KEYS[0]}, "Missing API key"),                       # another header
    ({"Authorization": f"Basic {KEYS[0]}"}, "Missing API key"),        # another scheme
])
def test_without_a_right_key_every_route_is_401(secured, method, path, kwargs, headers, message):
    resp = call(secured, method, path, kwargs, headers)
    assert resp.status_code == 401
    error = resp.json()["error"]
    assert error["type"] == "authentication_error" and message in error["message"]
    assert resp.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("method, path, kwargs", ROUTES)
def test_with_a_right_key_every_route_answers(secured, method, path, kwargs, key):
    resp = call(secured, method, path, kwargs, {"Authorization": f"Bearer {key}"})
    assert resp.status_code != 401, resp.text


@pytest.mark.parametrize("path", ["/health", "/docs", "/redoc", "/openapi.json", "/", "/playground/app.js",
                                  "/docs-assets/swagger-ui-bundle.js"])
def test_operations_pages_and_docs_stay_open(secured, path):
    assert httpx.get(f"{secured.url}{path}", timeout=10).status_code == 200


@pytest.mark.parametrize("path", ["/playground/../v1/models", "/playground/%2e%2e/v1/models",
                                  "/docs-assets/../gpu/status", "//v1/models"])
def test_the_open_prefixes_open_nothing_else(secured, path):
    resp = httpx.get(f"{secured.url}{path}", timeout=10)
    assert resp.status_code in (401, 404) and "data" not in resp.text


def test_the_openai_sdk(secured):
    good = openai.OpenAI(base_url=f"{secured.url}/v1", api_key=KEYS[1], max_retries=0)
    assert good.models.list().data
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{secured.url}/v1", api_key="sk-nope", max_retries=0).models.list()


def test_keys_never_reach_the_log(secured):
    assert KEYS[0] not in secured.logs() and KEYS[1] not in secured.logs()
