"""The UpstreamEngine's start-up wait and its cancellation of abandoned streams."""

from __future__ import annotations

import time

import httpx

from ..servers import ServerProcess, free_port


def test_gateway_waits_for_its_upstream(tiny_model_dir, tmp_path):
    engine_port = free_port()
    gateway = ServerProcess({"LMDEPLOY_BASE_URL": f"http://127.0.0.1:{engine_port}"}, tmp_path, "gateway").start()
    engine = ServerProcess({"MODEL_PATH": str(tiny_model_dir)}, tmp_path, "engine", port=engine_port)
    try:
        gateway.wait_listening()
        health = httpx.get(f"{gateway.url}/health", timeout=5)
        assert health.status_code == 503 and health.json()["ready"] is False
        chat = httpx.post(f"{gateway.url}/v1/chat/completions", timeout=10,
                          json={"model": "x", "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 503 and chat.json()["error"]["code"] == "engine_unavailable"

        engine.start().wait_healthy()
        gateway.wait_healthy(timeout=30)  # no restart: the background probe finds it
        reply = httpx.post(f"{gateway.url}/v1/chat/completions", timeout=30, json={
            "model": "qwen3-vl-tiny-random", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
        assert reply.status_code == 200, reply.text
    finally:
        gateway.stop()
        engine.stop()


def engine_busy(local_server) -> bool:
    """Whether the engine's worker thread is inside model.generate() right now."""
    return httpx.get(f"{local_server.url}/health", timeout=5).json()["generating"]


def test_client_disconnect_cancels_the_upstream_generation(upstream_server, local_server):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "go on"}], "max_tokens": 3000,
            "stream": True, "temperature": 1.0}
    with httpx.stream("POST", f"{upstream_server.url}/v1/chat/completions", json=body, timeout=30) as resp:
        chunks = resp.iter_bytes()
        next(chunks), next(chunks)
        assert engine_busy(local_server)
    # Generating 3000 tokens takes many seconds; a cancelled one frees the engine at once.
    deadline = time.monotonic() + 3
    while engine_busy(local_server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engine_busy(local_server)


def test_client_disconnect_cancels_a_non_streaming_request(upstream_server, local_server):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "go on"}], "max_tokens": 3000}
    try:
        httpx.post(f"{upstream_server.url}/v1/chat/completions", json=body, timeout=1.0)
    except httpx.ReadTimeout:
        pass
        deadline = time.monotonic() + 3
    while engine_busy(local_server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engine_busy(local_server)
