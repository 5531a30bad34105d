"""The UpstreamEngine's start-up wait (cancellation of abandoned requests: test_disconnect.py)."""

from __future__ import annotations

import httpx

from ..servers import ServerProcess, free_port


def test_gateway_waits_for_its_upstream(tiny_model_dir, tmp_path):
    engine_port = free_port()
    gateway = ServerProcess({"UPSTREAM_BASE_URL": f"http://127.0.0.1:{engine_port}"}, tmp_path, "gateway").start()
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
