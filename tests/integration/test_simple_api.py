"""/infer, /analyze (JSON and upload forms), /health and /gpu/status through real servers."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from .conftest import png_bytes


def post(gateway, path, **kwargs) -> httpx.Response:
    return httpx.post(f"{gateway.url}{path}", timeout=60, **kwargs)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_infer_text_only(gateway):
    resp = post(gateway, "/infer", json={"prompt": "Hello", "max_tokens": 5})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) >= {"text", "model", "usage", "latency_ms"}
    assert body["model"] == "tiny"
    assert 1 <= body["usage"]["completion_tokens"] <= 5
    assert body["latency_ms"] > 0


def test_infer_with_image_and_system_prompt(gateway):
    plain = post(gateway, "/infer", json={"prompt": "Hello", "max_tokens": 2}).json()
    with_image = post(gateway, "/infer", json={"prompt": "Hello", "image": b64(png_bytes()),
                                               "system_prompt": "Be brief.", "max_tokens": 2}).json()
    assert with_image["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 50


def test_infer_stream_gives_text_deltas_then_summary(gateway):
    body = {"prompt": "Hello", "max_tokens": 5, "stream": True}
    with httpx.stream("POST", f"{gateway.url}/infer", json=body, timeout=60) as resp:
        assert resp.status_code == 200
        raw = b"".join(resp.iter_bytes())
    events = [e[6:] for e in raw.split(b"\n\n") if e.strip()]
    assert events[-1] == b"[DONE]"
    payloads = [json.loads(e) for e in events[:-1]]
    final = payloads[-1]
    assert final["finish_reason"] in ("length", "stop")
    assert 1 <= final["usage"]["completion_tokens"] <= 5
    assert all(set(p) == {"text"} for p in payloads[:-1])


def test_infer_upload(gateway):
    files = {"image": ("red.png", png_bytes(), "image/png")}
    resp = post(gateway, "/infer/upload", data={"prompt": "What is it?", "max_tokens": "3"}, files=files)
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["prompt_tokens"] > 50


def test_infer_upload_of_a_text_file_is_415(gateway):
    files = {"image": ("notes.txt", b"just text\n" * 20, "text/plain")}
    resp = post(gateway, "/infer/upload", data={"prompt": "What is it?"}, files=files)
    assert resp.status_code == 415
    assert resp.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("task, fields, keys", [
    ("caption", {}, {"caption"}),
    ("describe", {"language": "French"}, {"description"}),
    ("ocr", {}, {"text", "lines"}),
    ("ocr", {"boxes": True}, {"text", "lines", "parsed"}),
    ("document", {}, {"markdown"}),
    ("document", {"format": "html"}, {"html"}),
    ("detect", {"objects": ["person", "red car"]}, {"objects", "parsed"}),
    ("detect", {}, {"objects", "parsed"}),
    ("point", {"objects": ["cup"]}, {"points", "parsed"}),
    ("qa", {"question": "What colour is it?"}, {"answer"}),
    ("compare", {"question": "Which is brighter?", "images": [b64(png_bytes((50, 40), (0, 0, 0)))]}, {"answer"}),
])
def test_every_task_through_the_real_servers(gateway, task, fields, keys):
    resp = post(gateway, "/analyze", json={"task": task, "image": b64(png_bytes((120, 90))),
                                           "max_tokens": 8, **fields})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["task"] == task and set(body["result"]) == keys
    assert body["image"] == {"width": 120, "height": 90}
    assert isinstance(body["text"], str) and body["usage"]["completion_tokens"] >= 1
    if task == "compare":
        assert body["images"] == [{"width": 120, "height": 90}, {"width": 50, "height": 40}]
    if "objects" in keys:  # random text is not JSON: an empty, honest result
        assert body["result"]["objects"] == [] or body["result"]["parsed"]


def test_extract_is_valid_by_construction_even_from_a_random_model(gateway):
    """Decoding is constrained to the schema (the local engine's own grammar, or the upstream
    sent it as response_format), so the tiny random model's answer validates."""
    import jsonschema

    schema = {"type": "object", "properties": {"total": {"type": "integer", "minimum": 0, "maximum": 999},
                                               "currency": {"enum": ["EUR", "USD"]}},
              "required": ["total", "currency"], "additionalProperties": False}
    resp = post(gateway, "/analyze", json={"task": "extract", "image": b64(png_bytes()), "schema": schema,
                                           "max_tokens": 200})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    jsonschema.validate(body["result"], schema)
    assert body["usage"]["completion_tokens"] < 200  # one turn: no repair was needed


def test_analyze_upload(gateway):
    files = {"image": ("doc.png", png_bytes((200, 100)), "image/png")}
    resp = post(gateway, "/analyze/upload", data={"task": "ocr", "max_tokens": "3"}, files=files)
    assert resp.status_code == 200, resp.text
    assert resp.json()["image"] == {"width": 200, "height": 100}


def test_analyze_upload_detect_and_compare(gateway):
    resp = post(gateway, "/analyze/upload", data={"task": "detect", "objects": "person, car", "max_tokens": "3"},
                files={"image": ("a.png", png_bytes(), "image/png")})
    assert resp.status_code == 200 and "objects" in resp.json()["result"]
    two = [("image", ("a.png", png_bytes(), "image/png")), ("image", ("b.png", png_bytes((30, 30)), "image/png"))]
    resp = post(gateway, "/analyze/upload", data={"task": "compare", "question": "Same?", "max_tokens": "3"},
                files=two)
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["images"]) == 2
    resp = post(gateway, "/analyze/upload", data={"task": "extract", "schema": "{not json"},
                files={"image": ("a.png", png_bytes(), "image/png")})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "schema"


@pytest.mark.parametrize("body, status", [
    ({"task": "qa", "image": b64(png_bytes())}, 400),            # qa without a question
    ({"task": "teleport", "image": b64(png_bytes())}, 400),      # unknown task
    ({"task": "caption"}, 400),                                   # no image
    ({"task": "caption", "image": "AAAA"}, 415),                  # base64 of non-image bytes
    ({"task": "compare", "image": b64(png_bytes()), "question": "?"}, 400),  # compare needs two
    ({"task": "caption", "images": [b64(png_bytes())] * 2}, 400),            # caption takes one
    ({"task": "extract", "image": b64(png_bytes())}, 400),                   # no schema
    ({"task": "extract", "image": b64(png_bytes()), "schema": {"type": 7}}, 400),  # invalid schema
    ({"task": "detect", "image": b64(png_bytes()), "objects": "person"}, 400),     # objects is a list
])
def test_analyze_errors(gateway, body, status):
    resp = post(gateway, "/analyze", json=body)
    assert resp.status_code == status, resp.text
    assert set(resp.json()["error"]) >= {"message", "type", "code"}


@pytest.mark.parametrize("name, data, status", [
    ("bomb.png", None, 413),
    ("cut.jpg", "truncated", 400),
    ("notes.png", b"hello, I am text" * 50, 415),
    ("empty.png", b"", 400),
])
def test_hostile_uploads_are_4xx_and_the_service_keeps_serving(gateway, name, data, status):
    from tests.media_helpers import jpeg, png_bomb
    if data is None:
        data = png_bomb()
    elif data == "truncated":
        data = jpeg((400, 300))[:-300]
    resp = post(gateway, "/analyze/upload", data={"task": "caption"}, files={"image": (name, data, "image/png")})
    assert resp.status_code == status, resp.text
    assert set(resp.json()["error"]) >= {"message", "type", "code"}
    ok = post(gateway, "/analyze", json={"task": "caption", "image": b64(png_bytes()), "max_tokens": 2})
    assert ok.status_code == 200


def test_health(gateway):
    resp = httpx.get(f"{gateway.url}/health", timeout=10)
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok" and "tiny" in body["models"] and body["gpu_count"] == 0


def test_gpu_status_without_a_gpu(gateway):
    body = httpx.get(f"{gateway.url}/gpu/status", timeout=10).json()
    assert body["available"] is False and "NVML" in body["reason"]


def test_body_over_the_cap_is_413(tmp_path, tiny_model_dir):
    from ..servers import ServerProcess
    server = ServerProcess({"MODEL_PATH": str(tiny_model_dir), "MAX_REQUEST_BYTES": "4096"}, tmp_path, "small")
    server.start()
    try:
        server.wait_listening()
        resp = post(server, "/infer", json={"prompt": "x" * 10_000})
        assert resp.status_code == 413
        assert "4,096" in resp.json()["error"]["message"]
    finally:
        server.stop()
