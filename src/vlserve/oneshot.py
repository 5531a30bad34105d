"""One-shot inference behind /infer and /analyze: a prompt and a few images → text.

Both build an ordinary chat request and run it through the same engine as
/v1/chat/completions; this module only adds the simpler input and output shapes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from . import openai_format as oai
from .analysis import TaskInput, build_prompt, parse_result
from .analysis import extract
from .app_state import Services
from .chat_input import apply_defaults, simple_messages
from .engines.base import EngineStream
from .errors import ErrorKind, ServiceError
from .media import NormalizedImage
from .schemas import AnalyzeResponse, ImageSize, InferResponse, Usage
from .sse import iter_events


def _request(services: Services, model: str | None, messages: list[dict[str, Any]],
             sampling: dict[str, Any]) -> dict[str, Any]:
    request = {"model": services.catalog.resolve(model), "messages": messages, **sampling}
    return apply_defaults(request, services.settings)


def _text_of(completion: dict[str, Any]) -> tuple[str, str | None]:
    try:
        choice = completion["choices"][0]
        return choice["message"].get("content") or "", choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ServiceError(ErrorKind.UPSTREAM_ERROR, "The engine's answer had no choices.") from None


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


async def infer(services: Services, *, prompt: str, image: NormalizedImage | None, system_prompt: str | None,
                model: str | None, sampling: dict[str, Any]) -> InferResponse:
    started = time.perf_counter()
    request = _request(services, model, simple_messages(prompt, [image] if image else [], system_prompt), sampling)
    completion = await services.engine.chat(request)
    text, finish = _text_of(completion)
    return InferResponse(text=text, model=completion.get("model", request["model"]),
                         usage=Usage(**(completion.get("usage") or {})), finish_reason=finish,
                         latency_ms=_ms_since(started))


async def infer_stream(services: Services, *, prompt: str, image: NormalizedImage | None,
                       system_prompt: str | None, model: str | None, sampling: dict[str, Any]) -> EngineStream:
    """SSE of `{"text": delta}` events, then one event with finish_reason and usage, then [DONE]."""
    request = _request(services, model, simple_messages(prompt, [image] if image else [], system_prompt), sampling)
    request.update(stream=True, stream_options={"include_usage": True})
    upstream = await services.engine.open_stream(request)
    stream = EngineStream(_text_deltas(upstream, request["model"]), on_close=upstream.aclose, on_abort=upstream.abort)
    stream.add_close_callback(lambda: setattr(stream, "usage", upstream.usage))
    return stream


async def _text_deltas(upstream: EngineStream, model: str) -> AsyncIterator[bytes]:
    started = time.perf_counter()
    final: dict[str, Any] = {"text": "", "finish_reason": None, "usage": None, "model": model}
    async with aclosing(iter_events(upstream)) as events:
        async for event in events:
            if event is None:
                break
            if "error" in event:  # already in our error shape: pass it on and stop
                yield oai.sse(event)
                return
            final["usage"] = event.get("usage") or final["usage"]
            for choice in event.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield oai.sse({"text": text})
                final["finish_reason"] = choice.get("finish_reason") or final["finish_reason"]
    final["latency_ms"] = _ms_since(started)
    yield oai.sse(final)
    yield oai.DONE


async def analyze(services: Services, *, spec: TaskInput, images: list[NormalizedImage], model: str | None,
                  sampling: dict[str, Any], schema: Any = None) -> AnalyzeResponse:
    started = time.perf_counter()
    prompt = build_prompt(spec)
    request = _request(services, model, simple_messages(prompt, images, None), sampling)
    if spec.task == "extract":
        text, usage, result, model_id = await _extract(services, request, schema)
    else:
        completion = await services.engine.chat(request)
        text = _text_of(completion)[0]
        usage, model_id = Usage(**(completion.get("usage") or {})), completion.get("model", request["model"])
        result = parse_result(spec, text, images[0].width, images[0].height)
    sizes = [ImageSize(width=i.width, height=i.height) for i in images]
    return AnalyzeResponse(task=spec.task, result=result, text=text, model=model_id, usage=usage,
                           latency_ms=_ms_since(started), image=sizes[0], images=sizes if len(sizes) > 1 else None)


async def _extract(services: Services, request: dict[str, Any], schema: Any) -> tuple[str, Usage, Any, str]:
    """Guided decoding where the engine has it; validate; one repair turn; else 422."""
    schema = extract.check_schema(schema)
    question = request["messages"][-1]["content"][-1]
    question["text"] = extract.schema_prompt(question["text"], schema)
    settings = services.settings
    if settings.engine_kind == "upstream" and settings.upstream_guided_decoding:
        request["response_format"] = extract.response_format(schema)
    completion = await services.engine.chat(request)
    text, usage = _text_of(completion)[0], Usage(**(completion.get("usage") or {}))
    value, problem = extract.validate(text, schema)
    if problem is not None:
        request["messages"] += [{"role": "assistant", "content": text},
                                {"role": "user", "content": extract.repair_message(problem)}]
        completion = await services.engine.chat(request)
        text = _text_of(completion)[0]
        usage = _add(usage, Usage(**(completion.get("usage") or {})))
        value, problem = extract.validate(text, schema)
        if problem is not None:
            raise extract.extraction_failed(problem, text)
    return text, usage, value, completion.get("model", request["model"])


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(prompt_tokens=a.prompt_tokens + b.prompt_tokens,
                 completion_tokens=a.completion_tokens + b.completion_tokens,
                 total_tokens=a.total_tokens + b.total_tokens)
