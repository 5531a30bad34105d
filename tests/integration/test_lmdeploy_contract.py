"""The gateway in front of LMDeploy's real bytes (tests/fixtures/lmdeploy-0.18.0).

A replay server answers with exactly what a real LMDeploy 0.18.0 api_server sent on a
GPU; a real vlserve gateway (UpstreamEngine) sits in front of it and the official openai
SDK talks to the gateway. Older versions' quirks (read in LMDeploy 0.11.1's source) are
replayed as recorded responses with the fields those versions set.
"""

from __future__ import annotations

import base64
import json

import httpx
import openai
import pytest

from ..lmdeploy_replay import ReplayServer, chunked_sse, with_json_body
from ..servers import ServerProcess
from .conftest import png_bytes

pytestmark = pytest.mark.contract


@pytest.fixture(scope="module")
def replay():
    server = ReplayServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(replay, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    server = ServerProcess({"UPSTREAM_BASE_URL": replay.url, "SERVED_MODEL_NAME": "qwen3-vl"}, logs, "gw").start()
    try:
        yield server.wait_healthy()
    finally:
        server.stop()


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0, timeout=30)


def recorded(replay, n: int) -> bytes:
    return replay.exchanges[n][1]


def recorded_json(replay, n: int) -> dict:
    return json.loads(recorded(replay, n).partition(b"\r\n\r\n")[2])


def recorded_stream_text(replay, n: int) -> str:
    body = recorded(replay, n).partition(b"\r\n\r\n")[2].decode()
    events = [json.loads(line[6:]) for line in body.split("\r\n") if line.startswith("data: {")]
    return "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])


HI = [{"role": "user", "content": "hi"}]


def test_models_and_alias(client):
    assert [m.id for m in client.models.list().data] == ["qwen3-vl", "qwen3-vl-tiny"]


def test_non_stream_answer_and_what_was_forwarded(replay, client):
    replay.chat_response = recorded(replay, 8)
    reply = client.chat.completions.create(model="qwen3-vl", messages=HI, max_tokens=16)
    expected = recorded_json(replay, 8)
    assert reply.choices[0].message.content == expected["choices"][0]["message"]["content"]
    assert reply.usage.completion_tokens == expected["usage"]["completion_tokens"] == 16
    sent = replay.received[-1]
    assert sent["model"] == "qwen3-vl-tiny"  # LMDeploy insists on its exact --model-name
    assert (sent["temperature"], sent["top_p"], sent["top_k"]) == (0.7, 0.8, 20)  # Qwen3-VL's recommendation


@pytest.mark.parametrize("n, usage", [(9, False), (10, True), (12, False)])
def test_streams_relay_as_recorded(replay, client, n, usage):
    replay.chat_response = recorded(replay, n)
    kwargs = {"stream_options": {"include_usage": True}} if usage else {}
    chunks = list(client.chat.completions.create(model="qwen3-vl", messages=HI, stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == recorded_stream_text(replay, n)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert (chunks[-1].usage is not None) is usage


def test_images_reach_lmdeploy_only_as_data_urls_with_the_budget(replay, client):
    replay.chat_response = recorded(replay, 11)
    png = png_bytes()
    content = [{"type": "image_url", "image_url": {"url": base64.b64encode(png).decode()}},
               {"type": "text", "text": "What is it?"}]
    client.chat.completions.create(model="qwen3-vl", messages=[{"role": "user", "content": content}], max_tokens=4)
    sent = replay.received[-1]
    assert sent["messages"][0]["content"][0]["image_url"] == {"url": "data:image/png;base64," + base64.b64encode(png).decode()}
    bounds = {"min_pixels": 65536, "max_pixels": 1310720}
    assert sent["mm_processor_kwargs"] == {"image": bounds, **bounds}  # 0.11-0.12 read the top, 0.13+ "image"


@pytest.mark.parametrize("url", ["/etc/passwd", "file:///etc/passwd", "http://127.0.0.1:23333/x.png"])
def test_what_lmdeploy_would_open_never_reaches_it(replay, gateway, url):
    before = len(replay.received)
    resp = httpx.post(f"{gateway.url}/v1/chat/completions", timeout=30, json={"model": "qwen3-vl", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "image_url_refused"
    assert len(replay.received) == before


def test_max_tokens_beyond_the_session_is_refused_before_burning_gpu_time(replay, gateway):
    before = len(replay.received)
    resp = httpx.post(f"{gateway.url}/v1/chat/completions", timeout=30,
                      json={"model": "qwen3-vl", "messages": HI, "max_tokens": 100000})
    assert resp.status_code == 400 and "MAX_MODEL_LEN" in resp.json()["error"]["message"]
    assert len(replay.received) == before


@pytest.mark.parametrize("n, exception, fragment", [
    (20, openai.BadRequestError, "messages: Field required"),
    (23, openai.NotFoundError, "does not exist"),
    (25, openai.BadRequestError, "must be a positive integer"),
    (26, openai.BadRequestError, "Invalid number of data characters"),
    (27, openai.BadRequestError, "Request preprocessing failed"),
])
def test_flat_errors_become_openai_errors(replay, client, n, exception, fragment):
    replay.chat_response = recorded(replay, n)
    with pytest.raises(exception) as info:
        client.chat.completions.create(model="qwen3-vl", messages=HI)
    assert fragment in info.value.message
    assert set(info.value.body) >= {"message", "type", "code"}  # the SDK found our envelope


def test_finish_reason_error_is_a_502(replay, client):
    body = recorded_json(replay, 8)
    body["choices"][0].update(finish_reason="error", message={"role": "assistant",
                              "content": "internal error happened, status code 7"})
    replay.chat_response = with_json_body(recorded(replay, 8), body)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="qwen3-vl", messages=HI)
    assert info.value.status_code == 502 and "status code 7" in info.value.message


def test_an_exhausted_session_is_a_400_not_an_empty_answer(replay, client):
    body = recorded_json(replay, 8)
    body["choices"][0].update(finish_reason="length", message={"role": "assistant", "content": ""})
    body["usage"].update(prompt_tokens=4096, completion_tokens=0, total_tokens=4096)
    replay.chat_response = with_json_body(recorded(replay, 8), body)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="qwen3-vl", messages=HI)
    assert info.value.code == "context_length_exceeded" and "4096" in info.value.message


def _events(replay, n: int, keep: int) -> list[bytes]:
    body = recorded(replay, n).partition(b"\r\n\r\n")[2].decode()
    return [f"{line}\n\n".encode() for line in body.split("\r\n") if line.startswith("data: {")][:keep]


@pytest.mark.parametrize("bad_event", [
    b'data: {"message": "engine crashed", "type": "server_error", "code": 500, "param": null, "object": "error"}\n\n',
    b'data: {"id": "x", "object": "chat.completion.chunk", "model": "qwen3-vl-tiny", "choices": [{"index": 0, '
    b'"delta": {"role": "assistant", "content": "internal error happened"}, "finish_reason": "error"}]}\n\n',
])
def test_mid_stream_errors_are_raised_by_the_sdk(replay, client, bad_event):
    replay.chat_response = chunked_sse(recorded(replay, 9), [*_events(replay, 9, 2), bad_event, b"data: [DONE]\n\n"])
    stream = client.chat.completions.create(model="qwen3-vl", messages=HI, stream=True)
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 2  # what came before the error still reached the client
    assert "engine crashed" in info.value.message or "internal error happened" in info.value.message
