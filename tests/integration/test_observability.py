"""Request ids, Prometheus metrics and JSON request logs, through the real servers."""

from __future__ import annotations

import base64
import json
import re

import httpx

from ..waiting import eventually
from .conftest import png_bytes

SECRET_PROMPT = "my-very-private-prompt-4711"


def metric(gateway, name: str, **labels) -> float:
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # as the exposition orders them
    pattern = rf"^{re.escape(name)}(?:\{{{re.escape(selector)}\}})? ([0-9.e+-]+)$" if labels else \
        rf"^{re.escape(name)} ([0-9.e+-]+)$"
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


def chat(gateway, **extra) -> httpx.Response:
    body = {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": SECRET_PROMPT}], **extra}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=60,
                      headers={"X-Request-ID": "req-abc.123"})


def test_request_id_is_echoed_or_made(gateway):
    assert chat(gateway).headers["x-request-id"] == "req-abc.123"
    made = httpx.get(f"{gateway.url}/health", headers={"X-Request-ID": "bad id with spaces"}, timeout=10)
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])


def test_metrics_count_requests_tokens_streams_and_images(gateway):
    route = "/v1/chat/completions"
    before = {
        "ok": metric(gateway, "vlserve_requests_total", key="anonymous", route=route, status="200"),
        "bad": metric(gateway, "vlserve_requests_total", key="anonymous", route=route, status="400"),
        "completion": metric(gateway, "vlserve_tokens_total", key="anonymous", kind="completion"),
        "ttft": metric(gateway, "vlserve_time_to_first_byte_seconds_count", route=route),
        "image_in": metric(gateway, "vlserve_image_bytes_total", direction="in"),
    }
    assert chat(gateway).status_code == 200
    assert chat(gateway, max_tokens=0).status_code == 400
    with httpx.stream("POST", f"{gateway.url}{route}", timeout=60, json={
            "model": "tiny", "max_tokens": 3, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": base64.b64encode(png_bytes()).decode()}}]}]}) as resp:
        resp.read()
    assert metric(gateway, "vlserve_requests_total", key="anonymous", route=route, status="200") == before["ok"] + 2
    assert metric(gateway, "vlserve_requests_total", key="anonymous", route=route, status="400") == before["bad"] + 1
    assert metric(gateway, "vlserve_tokens_total", key="anonymous", kind="completion") >= before["completion"] + 2
    assert metric(gateway, "vlserve_time_to_first_byte_seconds_count", route=route) == before["ttft"] + 1
    assert metric(gateway, "vlserve_image_bytes_total", direction="in") == before["image_in"] + len(png_bytes())
    assert metric(gateway, "vlserve_engine_ready") == 1
    assert "vlserve_queue_depth 0.0" in httpx.get(f"{gateway.url}/metrics", timeout=10).text


def test_upstream_gateway_reports_its_replicas(upstream_server):
    assert metric(upstream_server, "vlserve_upstream_up", replica="0") == 1


def test_one_json_log_line_per_request_without_content(gateway):
    chat(gateway)
    lines = eventually(lambda: [json.loads(line) for line in gateway.logs().splitlines()
                                if line.startswith("{") and '"req-abc.123"' in line])
    entry = lines[-1]
    assert entry["route"] == "/v1/chat/completions" and entry["status"] == 200
    assert entry["model"] == "tiny" and entry["completion_tokens"] >= 1 and entry["latency_ms"] > 0
    assert SECRET_PROMPT not in gateway.logs()
