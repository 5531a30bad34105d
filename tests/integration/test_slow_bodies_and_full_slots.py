"""A real gateway against bodies trickled below the minimum rate, and against idle
clients holding every connection slot: the trickles are cut off soon after the grace, an
upload above the rate is served, and /health keeps answering at once."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from ..servers import ServerProcess
from ..waiting import eventually

pytestmark = pytest.mark.timeout(120)

GRACE_S = 2
LIMITS = {"HTTP_BODY_GRACE_S": str(GRACE_S), "HTTP_BODY_MIN_RATE": "500", "HTTP_BODY_TIMEOUT_S": "60",
          "HTTP_HEADER_TIMEOUT_S": "30", "HTTP_MAX_CONNECTIONS": "16"}


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("bodies")
    process = ServerProcess({"MODEL_PATH": str(tiny_model_dir), **LIMITS}, logs, "bodies").start()
    try:
        yield process.wait_healthy()
    finally:
        process.stop()


def connect(server, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10, source_address=(source, 0))


def answer_to(sock: socket.socket) -> tuple[int, bytes]:
    sock.settimeout(15)
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def test_a_request_refused_while_its_client_still_sends_gets_its_answer_not_a_reset(server):
    # Headers over the limit (431) while the client goes on sending, as an upload does: the
    # server drains what keeps coming after its answer instead of resetting the connection,
    # which would destroy the answer on its way.
    sock = connect(server)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000)
    try:
        for _ in range(32):
            sock.sendall(b"a" * 65536)
    except (BrokenPipeError, ConnectionResetError):
        pass
    sock.shutdown(socket.SHUT_WR)  # done sending, as a client that saw the answer would be
    status, body = answer_to(sock)
    assert status == 431 and b"HTTP_MAX_HEADER_BYTES" in body


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_trickled_body_is_cut_off_soon_after_the_grace(server, framing):
    sock = connect(server)
    size = "Transfer-Encoding: chunked" if framing == "chunked" else "Content-Length: 100000"
    sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"{size}\r\n\r\n".encode())
    started = time.monotonic()
    try:
        while time.monotonic() - started < 30:  # a byte a second, until the server hangs up
            sock.sendall(b"1\r\n \r\n" if framing == "chunked" else b" ")
            sock.settimeout(1)
            try:
                if sock.recv(65536, socket.MSG_PEEK):
                    break
            except TimeoutError:
                continue
    except (BrokenPipeError, ConnectionResetError):
        pass
    status, body = answer_to(sock)
    assert status == 408 and "HTTP_BODY_MIN_RATE" in json.loads(body)["error"]["message"]
    assert time.monotonic() - started < GRACE_S + 4  # not HTTP_BODY_TIMEOUT_S's 60 s


def test_an_upload_above_the_minimum_rate_is_served(server):
    body = json.dumps({"model": "qwen3-vl-tiny-random", "max_tokens": 2,
                       "messages": [{"role": "user", "content": "hi " * 1500}]}).encode()  # ~4.5 KB
    sock = connect(server)
    sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
    for start in range(0, len(body), 250):  # ~1,000 bytes a second: 4.5 s, past the 2 s grace
        sock.sendall(body[start:start + 250])
        time.sleep(0.25)  # pacing the upload (what is tested), not waiting for the server
    status, answer = answer_to(sock)
    assert status == 200, answer


def test_health_answers_at_once_while_idle_clients_hold_every_slot(server):
    # Attackers from another loopback address; the probe, like a kubelet, from its own.
    idle = [connect(server, "127.0.0.2") for _ in range(16 + 4)]
    try:
        def slots_full() -> bool:
            try:
                return httpx.post(f"{server.url}/v1/models", timeout=5).status_code == 503
            except httpx.HTTPError:
                return False

        assert eventually(slots_full), "the idle connections never filled the slots"
        started = time.monotonic()
        resp = httpx.get(f"{server.url}/health", timeout=5)
        assert resp.status_code == 200 and time.monotonic() - started < 0.1
        assert httpx.get(f"{server.url}/metrics", timeout=5).status_code == 200
        refused = httpx.get(f"{server.url}/v1/models", timeout=5)  # an operations slot serves nothing else
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "too_many_connections"
    finally:
        for sock in idle:
            sock.close()
