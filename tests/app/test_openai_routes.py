"""The OpenAI routes in process: what a client gets, and what reaches the engine."""

from __future__ import annotations

import base64
import io
import json

from PIL import Image

from vlserve.sse import EventSplitter, payload_of

from ..scripted_engine import ScriptedEngine


def png_data_url(size: tuple[int, int] = (64, 48)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def events(body: bytes) -> list:
    splitter = EventSplitter()
    return [payload_of(event) for event in splitter.feed(body)]


async def test_models_and_one_model(client):
    listed = (await client.get("/v1/models")).json()
    assert [m["id"] for m in listed["data"]] == ["scripted"]
    assert (await client.get("/v1/models/scripted")).json()["id"] == "scripted"


async def test_a_chat_answer_and_what_the_engine_was_sent(client, engine: ScriptedEngine):
    resp = await client.post("/v1/chat/completions", json={
        "model": "scripted", "messages": [{"role": "system", "content": "be brief"},
                                          {"role": "user", "content": "hi"},
                                          {"role": "developer", "content": "in English"}]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "a scripted answer"
    sent = engine.requests[-1]
    # The gateway's defaults fill what the client left out; system messages become one, first.
    assert sent.body["max_tokens"] > 0 and sent.body["temperature"] == 0.7
    assert sent.body["messages"][0] == {"role": "system", "content": "be brief\n\nin English"}
    assert [m["role"] for m in sent.body["messages"]] == ["system", "user"]


async def test_a_streamed_chat_is_sse_ending_with_done(client):
    resp = await client.post("/v1/chat/completions", json={
        "model": "scripted", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert resp.headers["content-type"].startswith("text/event-stream")
    payloads = events(resp.content)
    assert payloads[-1] is None  # [DONE]
    text = "".join(choice["delta"].get("content") or "" for p in payloads[:-1] for choice in p["choices"])
    assert text.strip() == "a scripted answer"


async def test_an_image_reaches_the_engine_as_a_checked_data_url(client, engine: ScriptedEngine):
    url = png_data_url()
    resp = await client.post("/v1/chat/completions", json={"model": "scripted", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                     {"type": "text", "text": "what colour?"}]}]})
    assert resp.status_code == 200, resp.text
    part = engine.requests[-1].body["messages"][0]["content"][0]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/")
    assert engine.requests[-1].image_pixels is not None  # the budget travels as a hint


async def test_the_completions_api_defaults_to_16_tokens(client, engine: ScriptedEngine):
    resp = await client.post("/v1/completions", json={"model": "scripted", "prompt": "Once upon"})
    assert resp.status_code == 200, resp.text
    assert engine.requests[-1].kind == "text" and engine.requests[-1].max_tokens == 16


async def test_the_responses_api_whole_and_streamed(client):
    whole = (await client.post("/v1/responses", json={"model": "scripted", "input": "hi"})).json()
    assert whole["status"] == "completed"
    assert whole["output"][0]["content"][0]["text"] == "a scripted answer"
    streamed = await client.post("/v1/responses", json={"model": "scripted", "input": "hi", "stream": True})
    kinds = [p["type"] for p in events(streamed.content) if p]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert json.dumps(kinds).count("response.output_text.delta") == 3


async def test_analyze_caption_and_infer(client):
    caption = await client.post("/analyze", json={"task": "caption", "image": png_data_url()})
    assert caption.status_code == 200, caption.text
    assert caption.json()["result"] == {"caption": "a scripted answer"}
    assert caption.json()["image"] == {"width": 64, "height": 48}
    infer = await client.post("/infer", json={"prompt": "hi"})
    assert infer.json()["text"] == "a scripted answer"
