"""CORS through a real server with API keys, with the exact headers a browser sends."""

from __future__ import annotations

import httpx
import pytest

from ..servers import ServerProcess

ALLOWED = "http://app.example:3000"
KEY = "sk-cors-test"
CHAT = {"model": "qwen3-vl-tiny-random", "max_tokens": 3, "stream": True,
        "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def cors_server(tiny_model_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("cors")
    server = ServerProcess({"MODEL_PATH": str(tiny_model_dir), "API_KEYS": KEY,
                            "CORS_ALLOW_ORIGINS": f"{ALLOWED}/, http://other.example"}, logs, "cors").start()
    try:
        yield server.wait_healthy()
    finally:
        server.stop()


def preflight(server, origin: str, path: str = "/v1/chat/completions") -> httpx.Response:
    # What Chromium sends before a fetch() with a JSON body and an Authorization header.
    return httpx.options(f"{server.url}{path}", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type", "Sec-Fetch-Mode": "cors"})


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses", "/analyze/upload"])
def test_a_preflight_from_an_allowed_origin_is_answered_before_the_key_check(cors_server, path):
    resp = preflight(cors_server, ALLOWED, path)
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in resp.headers["access-control-allow-methods"]
    allowed = {h.strip() for h in resp.headers["access-control-allow-headers"].lower().split(",")}
    assert {"authorization", "content-type"} <= allowed


def test_a_preflight_from_another_origin_is_refused(cors_server):
    resp = preflight(cors_server, "http://evil.example")
    assert resp.status_code == 400
    assert "access-control-allow-origin" not in resp.headers


def test_a_cross_origin_stream_carries_the_headers(cors_server):
    with httpx.stream("POST", f"{cors_server.url}/v1/chat/completions", json=CHAT, timeout=60,
                      headers={"Origin": ALLOWED, "Authorization": f"Bearer {KEY}"}) as resp:
        assert resp.status_code == 200
        assert resp.headers["access-control-allow-origin"] == ALLOWED
        assert "x-request-id" in resp.headers["access-control-expose-headers"].lower()
        body = b"".join(resp.iter_bytes())
    assert body.rstrip().endswith(b"data: [DONE]")


def test_errors_are_readable_by_the_page(cors_server):
    # Without the header a browser hides the 401 from the page, which then can't say why.
    resp = httpx.post(f"{cors_server.url}/v1/chat/completions", json=CHAT, headers={"Origin": ALLOWED})
    assert resp.status_code == 401
    assert resp.headers["access-control-allow-origin"] == ALLOWED


def test_no_cors_unless_configured(local_server):
    resp = preflight(local_server, ALLOWED)
    assert "access-control-allow-origin" not in resp.headers
    post = httpx.post(f"{local_server.url}/v1/models", headers={"Origin": ALLOWED})
    assert "access-control-allow-origin" not in post.headers
