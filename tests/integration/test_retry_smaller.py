"""Retry smaller: a request whose images do not fit the engine is sent once more with each
image at a quarter of its pixels, before any byte reaches the client, and says so.

The upstream here is a fault injector with a context of CONTEXT_TOKENS: it counts each
image's visual tokens as Qwen3-VL would (the pixels it would see, under the
mm_processor_kwargs budget it is sent, over 32x32) and refuses a prompt over its context
in the words and shapes of real engines, from their source and recordings:
- vLLM: HTTP 400, OpenAI's envelope, "This model's maximum context length is ...";
- LMDeploy 0.16+ (serve/core/async_engine.py, serve/openai/errors.py): HTTP 400 with its
  flat error "Input length (N) must be smaller than the model context length (M).", or,
  once the stream has started, an `error` event "The request exceeds the model context
  length.";
- LMDeploy up to 0.15 (async_engine.py, "run out of tokens"): HTTP 200 with an empty
  answer, finish_reason "length", no completion tokens (tests/fixtures/lmdeploy-0.18.0
  has the shape of its chunks);
- out of memory: HTTP 500 "CUDA out of memory".
The gateway in front of it is a real `vlserve serve` process; the client is the openai SDK
and httpx.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json

import httpx
import openai
import pytest
from aiohttp import web
from PIL import Image

from ..scripted_upstream import serve_in_thread
from ..servers import ServerProcess
from .conftest import TEST_MEDIA_ENV, jpeg_bytes

CONTEXT_TOKENS = 700
BUDGET_PIXELS = 1000 * 32 * 32  # MEDIA_IMAGE_MAX_PIXELS of the gateway under test
PHOTO = jpeg_bytes((1600, 1200))  # under twice the budget: left to the engine to shrink (LMDeploy's form)
SHRUNK = "x-vlserve-images-shrunk"


def image_pixels(data_url: str) -> int:
    with Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))) as img:
        return img.width * img.height


class ContextLimitedUpstream:
    """An OpenAI-compatible engine that refuses prompts over CONTEXT_TOKENS, as `style` says."""

    def __init__(self) -> None:
        self.style = "vllm"
        self.requests: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0

    def tokens(self, body: dict) -> int:
        budget = (body.get("mm_processor_kwargs") or {}).get("max_pixels") or BUDGET_PIXELS
        images = [part["image_url"]["url"] for message in body["messages"] if isinstance(message["content"], list)
                  for part in message["content"] if part["type"] == "image_url"]
        text = sum(len(json.dumps(message["content"])) // 4 for message in body["messages"])
        tools = len(json.dumps(body.get("tools", []))) // 4
        return sum(min(image_pixels(url), budget) // 1024 for url in images) + (0 if images else text) + tools

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "limited", "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        tokens = self.tokens(body)
        if tokens <= CONTEXT_TOKENS:
            return await self._answer(request, body, "It fits.")
        if self.style == "vllm":
            return web.json_response({"error": {
                "message": f"This model's maximum context length is {CONTEXT_TOKENS} tokens. However, your request "
                           f"has {tokens} input tokens. Please reduce the length of the input messages.",
                "type": "BadRequestError", "param": None, "code": 400}}, status=400)
        if self.style == "lmdeploy-0.18":
            return web.json_response({"message": f"Input length ({tokens}) must be smaller than the model context "
                                      f"length ({CONTEXT_TOKENS}).", "type": "invalid_request_error", "code": 400,
                                      "param": None, "object": "error"}, status=400)
        if self.style == "out-of-memory":
            return web.json_response({"error": {"message": "CUDA out of memory. Tried to allocate 2.00 GiB",
                                                "type": "InternalServerError", "code": 500}}, status=500)
        if self.style == "lmdeploy-0.11":
            return await self._answer(request, body, "", finish="length", completion_tokens=0)
        # "lmdeploy-0.18-event" / "after-a-word": the stream starts, then the engine refuses
        first_word = "A" if self.style == "after-a-word" else None
        return await self._stream(request, [first_word] if first_word else [], error={
            "message": "The request exceeds the model context length.", "type": "invalid_request_error",
            "code": 400, "param": None})

    async def _answer(self, request: web.Request, body: dict, text: str, finish: str = "stop",
                      completion_tokens: int = 2) -> web.StreamResponse:
        usage = {"prompt_tokens": self.tokens(body), "completion_tokens": completion_tokens,
                 "total_tokens": self.tokens(body) + completion_tokens}
        if body.get("stream"):
            return await self._stream(request, [text] if text else [], finish=finish,
                                      usage=usage if (body.get("stream_options") or {}).get("include_usage") else None)
        return web.json_response({"id": "x", "object": "chat.completion", "created": 0, "model": "limited",
                                  "usage": usage, "choices": [{"index": 0, "finish_reason": finish,
                                                               "message": {"role": "assistant", "content": text}}]})

    async def _stream(self, request: web.Request, words: list[str], finish: str = "stop",
                      usage: dict | None = None, error: dict | None = None) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        deltas = [{"role": "assistant", "content": ""}, *({"content": word} for word in words)]
        for index, delta in enumerate(deltas):
            last = index == len(deltas) - 1 and error is None
            await self._event(response, {"id": "x", "object": "chat.completion.chunk", "created": 0,
                                         "model": "limited", "choices": [{"index": 0, "delta": delta,
                                                                          "finish_reason": finish if last else None}]})
        if error is not None:
            await self._event(response, {"error": error})
        if usage is not None:
            await self._event(response, {"id": "x", "object": "chat.completion.chunk", "created": 0,
                                         "model": "limited", "choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        return response

    async def _event(self, response: web.StreamResponse, payload: dict) -> None:
        await response.write(b"data: " + json.dumps(payload).encode() + b"\n\n")

    def start(self) -> ContextLimitedUpstream:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([web.get("/v1/models", self._models), web.post("/v1/chat/completions", self._chat)])
        self.port = serve_in_thread(app, self.loop)
        return self


@pytest.fixture(scope="module")
def upstream() -> ContextLimitedUpstream:
    return ContextLimitedUpstream().start()


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory):
    logs = tmp_path_factory.mktemp("retry-smaller")
    server = ServerProcess({"UPSTREAM_BASE_URL": f"http://127.0.0.1:{upstream.port}",
                            "MEDIA_IMAGE_MAX_PIXELS": str(BUDGET_PIXELS), **TEST_MEDIA_ENV}, logs, "retry").start()
    try:
        yield server.wait_healthy()
    finally:
        server.stop()


@pytest.fixture
def limited(upstream):
    upstream.requests.clear()
    return upstream


def photo_message(text: str = "What is in this photo?") -> list[dict]:
    url = "data:image/jpeg;base64," + base64.b64encode(PHOTO).decode()
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": text}]}]


def seen_pixels(body: dict) -> int:
    """The pixels the engine would see of the request's image (its own, under its budget)."""
    url = body["messages"][0]["content"][0]["image_url"]["url"]
    return min(image_pixels(url), body["mm_processor_kwargs"]["max_pixels"])


def assert_sent_again_smaller(upstream: ContextLimitedUpstream) -> None:
    first, second = upstream.requests
    assert seen_pixels(first) > CONTEXT_TOKENS * 1024
    assert seen_pixels(first) / 4 * 0.9 <= seen_pixels(second) <= seen_pixels(first) / 4
    assert second["mm_processor_kwargs"]["max_pixels"] <= first["mm_processor_kwargs"]["max_pixels"] // 4


WHOLE_STYLES = ["vllm", "lmdeploy-0.18", "lmdeploy-0.11", "out-of-memory"]


@pytest.mark.parametrize("style", WHOLE_STYLES)
def test_a_whole_answer_comes_back_from_smaller_images_and_says_so(gateway, limited, style):
    limited.style = style
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none")
    raw = client.chat.completions.with_raw_response.create(model="limited", messages=photo_message())
    answer = raw.parse()
    assert answer.choices[0].message.content == "It fits."
    assert raw.headers[SHRUNK] == "0.25"
    assert answer.usage.model_extra["images_shrunk"] == 0.25
    assert_sent_again_smaller(limited)


@pytest.mark.parametrize("style", [*WHOLE_STYLES, "lmdeploy-0.18-event"])
def test_a_stream_comes_back_from_smaller_images_and_says_so(gateway, limited, style):
    limited.style = style
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none")
    with client.chat.completions.with_streaming_response.create(
            model="limited", messages=photo_message(), stream=True,
            stream_options={"include_usage": True}) as response:
        assert response.headers[SHRUNK] == "0.25"
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "It fits."
    assert chunks[-1].usage.model_extra["images_shrunk"] == 0.25
    assert_sent_again_smaller(limited)


def test_analyze_is_retried_the_same_way(gateway, limited):
    limited.style = "lmdeploy-0.18"
    resp = httpx.post(f"{gateway.url}/analyze", timeout=60,
                      json={"task": "caption", "image": base64.b64encode(PHOTO).decode()})
    assert resp.status_code == 200, resp.text
    assert resp.headers[SHRUNK] == "0.25" and len(limited.requests) == 2


def test_a_text_only_overflow_is_not_retried(gateway, limited):
    limited.style = "vllm"
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="limited", messages=[{"role": "user", "content": "word " * 4000}])
    assert refused.value.code == "context_length_exceeded"
    assert "maximum context length" in refused.value.message
    assert len(limited.requests) == 1


def test_never_retried_after_a_byte_was_sent(gateway, limited):
    limited.style = "after-a-word"
    body = {"model": "limited", "messages": photo_message(), "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200 and SHRUNK not in resp.headers
        text = resp.read().decode()
    assert '"content": "A"' in text and "exceeds the model context length" in text
    assert len(limited.requests) == 1


def test_images_that_still_do_not_fit_are_refused_after_one_retry(gateway, limited):
    limited.style = "vllm"
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none", max_retries=0)
    messages = photo_message() * 1
    messages[0]["content"] = messages[0]["content"][:1] * 4 + messages[0]["content"][1:]  # 4 photos: 4x too many
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="limited", messages=messages)
    assert refused.value.code == "context_length_exceeded"
    assert len(limited.requests) == 2


def test_the_local_engine_is_retried_the_same_way(tiny_model_dir, tmp_path):
    """A 768x768 photo is 576 visual tokens: under the gateway's check of images against a
    590-token context, over it with the chat template and the question (the local engine
    refuses), and 144 tokens at a quarter of its pixels."""
    env = {"MODEL_PATH": str(tiny_model_dir), "SERVED_MODEL_NAME": "tiny", "MAX_MODEL_LEN": "590",
           "MEDIA_IMAGE_MAX_PIXELS": str(600 * 32 * 32), "VLSERVE_CACHE_DIR": str(tmp_path)}
    server = ServerProcess(env, tmp_path, "local-retry").start()
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes((768, 768))).decode()
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": "Describe this photo in a few words, please."}]}]
    try:
        server.wait_healthy()
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="tiny", messages=messages, max_tokens=4)
        answer = raw.parse()
        assert raw.headers[SHRUNK] == "0.25"
        assert 144 < answer.usage.prompt_tokens < 200  # the image's 144 tokens and the text
        metrics = httpx.get(f"{server.url}/metrics").text
        assert "vlserve_retries_with_smaller_images_total 1.0" in metrics
    finally:
        server.stop()


def test_a_prompt_full_of_tool_definitions_is_refused_saying_so(gateway, limited):
    """Open WebUI sends its built-in tools (26 of them, ~20 KB) with every chat by default:
    the refusal says what fills the prompt, not "images included"."""
    limited.style = "vllm"
    tools = [{"type": "function", "function": {"name": f"tool_{n}", "description": "d" * 600,
                                               "parameters": {"type": "object", "properties": {}}}}
             for n in range(26)]
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="limited", messages=[{"role": "user", "content": "hi"}], tools=tools)
    assert refused.value.code == "context_length_exceeded"
    assert "The request holds 26 tool definitions" in refused.value.message
    assert "image" not in refused.value.message.split("The request holds")[1]
