"""An upstream started without a tool-call or reasoning parser (LMDeploy without
--tool-call-parser, vLLM without --enable-auto-tool-choice) sends Qwen's raw tags as
content; the gateway turns them into tool_calls and reasoning_content, whole or streamed.

The upstream is scripted with the bytes such a server sends (OpenAI chunks whose content
carries the tags, one special token per chunk, as Qwen's tokenizer has them)."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from tests.local_site import serve_app
from vlserve.config import Settings
from vlserve.engines.base import EngineRequest
from vlserve.engines.upstream.engine import UpstreamEngine

RAW = {"qwen3-vl": ["Let me look. ", "<tool_call>", '\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n',
                    "</tool_call>"],
       "qwen3-vl-thinking": ["The user wants", " the weather.", "</think>", "\n\n", "It is sunny."]}


def chunk(model: str, delta: dict, finish: str | None = None) -> bytes:
    body = {"id": "x", "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    pieces = RAW[body["model"]]
    if not body.get("stream"):
        return web.json_response({"id": "x", "object": "chat.completion", "model": body["model"], "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "".join(pieces)}}]})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(chunk(body["model"], {"role": "assistant", "content": ""}))
    for piece in pieces:
        await response.write(chunk(body["model"], {"content": piece}))
    await response.write(chunk(body["model"], {}, "stop") + b"data: [DONE]\n\n")
    return response


async def models(_: web.Request) -> web.Response:
    return web.json_response({"data": [{"id": m} for m in RAW]})


@pytest.fixture
async def engine():
    app = web.Application()
    app.add_routes([web.get("/v1/models", models),
                    web.post("/v1/chat/completions", chat)])
    async with serve_app(app) as (_, url):
        engine = UpstreamEngine(Settings(UPSTREAM_BASE_URL=url))
        await engine.start()
        assert await engine.wait_ready(5)
        yield engine
        await engine.close()


def request(model: str, stream: bool = False) -> EngineRequest:
    return EngineRequest({"model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]})


async def test_a_raw_tool_call_in_a_whole_answer(engine):
    choice = (await engine.complete(request("qwen3-vl")))["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Let me look."
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == {"city": "Paris"}


def test_a_thinking_models_answer_whose_reasoning_the_upstream_split_keeps_it_and_its_call():
    """An upstream with a reasoning parser but no tool parser: reasoning already split off,
    a raw call left in the content."""
    from vlserve.engines.upstream.answer_rewrite import rewrite_completion

    message = {"role": "assistant", "reasoning_content": "The user wants the weather.",
               "content": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'}
    choice = rewrite_completion({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]},
                                "qwen3-vl-thinking")["choices"][0]
    assert choice["message"]["reasoning_content"] == "The user wants the weather."
    assert [c["function"]["name"] for c in choice["message"]["tool_calls"]] == ["get_weather"]
    assert choice["finish_reason"] == "tool_calls"


async def test_raw_reasoning_in_a_whole_answer(engine):
    message = (await engine.complete(request("qwen3-vl-thinking")))["choices"][0]["message"]
    assert message["content"] == "It is sunny." and message["reasoning_content"] == "The user wants the weather."


async def streamed(engine, model: str) -> list[dict]:
    stream = await engine.open_stream(request(model, stream=True))
    raw = b"".join([piece async for piece in stream])
    await stream.aclose()
    events = [e[6:] for e in raw.split(b"\n\n") if e.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    return [json.loads(e) for e in events[:-1]]


async def test_a_raw_tool_call_in_a_stream(engine):
    events = await streamed(engine, "qwen3-vl")
    deltas = [e["choices"][0]["delta"] for e in events]
    assert "".join(d.get("content") or "" for d in deltas) == "Let me look. "
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert len(calls) == 1 and calls[0]["index"] == 0 and calls[0]["function"]["name"] == "get_weather"
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_raw_reasoning_in_a_thinking_models_stream(engine):
    deltas = [e["choices"][0]["delta"] for e in await streamed(engine, "qwen3-vl-thinking")]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "The user wants the weather."
    assert "".join(d.get("content") or "" for d in deltas) == "It is sunny."
