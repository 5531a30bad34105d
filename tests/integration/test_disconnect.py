"""A client that leaves stops the engine within a second, on every route family.

The client is a raw socket, as `curl -m` is: it sends the request, waits until the
engine is really generating (a 3000-token answer with ignore_eos: many seconds), then
hangs up. The engine side is watched: the local engine's /health says whether its worker
is inside generate(). Both gateways are covered: on the local engine itself, and in
front of it on the upstream engine.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from ..waiting import eventually
from .conftest import png_bytes

LONG = {"max_tokens": 3000, "ignore_eos": True, "temperature": 1.0}
IMAGE = "data:image/png;base64," + __import__("base64").b64encode(png_bytes()).decode()


def engine_busy(local_server) -> bool:
    """Whether the engine's worker thread is inside model.generate() right now."""
    return httpx.get(f"{local_server.url}/health", timeout=5).json()["generating"]


def raw_request(url: str, path: str, body: bytes, content_type: str = "application/json") -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body)
    return sock


def multipart(fields: dict[str, str], image: bytes) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/", data=fields, files={"image": ("a.png", image, "image/png")})
    return request.read(), request.headers["content-type"]


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "go on"}], **LONG}
CASES = {
    "chat": ("/v1/chat/completions", CHAT),
    "chat-stream": ("/v1/chat/completions", {**CHAT, "stream": True}),
    "infer": ("/infer", {"prompt": "go on", **LONG}),
    "infer-stream": ("/infer", {"prompt": "go on", "stream": True, **LONG}),
    "analyze": ("/analyze", {"task": "caption", "image": IMAGE, **LONG}),
    # An unbounded string keeps the constrained answer going (a schema the grammar completes
    # in a few tokens would end the generation at once under ignore_eos: nothing to leave).
    "analyze-extract": ("/analyze", {"task": "extract", "image": IMAGE, **LONG,
                                     "schema": {"type": "object", "properties": {"a": {"type": "string"}},
                                                "required": ["a"]}}),
}


@pytest.mark.parametrize("case", [*CASES, "analyze-upload", "infer-upload"])
def test_a_client_that_leaves_stops_the_engine_within_a_second(gateway, local_server, case):
    if case.endswith("upload"):
        path = "/analyze/upload" if case.startswith("analyze") else "/infer/upload"
        fields = {"task": "caption"} if case.startswith("analyze") else {"prompt": "go on"}
        body, ctype = multipart({**fields, "max_tokens": "3000", "ignore_eos": "true"}, png_bytes())
    else:
        path, payload = CASES[case]
        body, ctype = json.dumps(payload).encode(), "application/json"
    assert not engine_busy(local_server)
    sock = raw_request(gateway.url, path, body, ctype)
    try:
        assert eventually(lambda: engine_busy(local_server)), "the engine never started generating"
    finally:
        sock.close()
    left = time.monotonic()
    assert eventually(lambda: not engine_busy(local_server)), "the engine kept generating"
    assert time.monotonic() - left <= 1.0
    assert httpx.get(f"{gateway.url}/health", timeout=5).status_code == 200  # and it still serves
