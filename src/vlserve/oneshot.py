"""One-shot inference behind /infer and /analyze: a prompt and at most one image → text.

Both build an ordinary chat request and run it through the same engine as
/v1/chat/completions; this module only adds the simpler input and output shapes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from . import openai_format as oai
from .analysis import parse_result, task_prompt
from .app_state import Services
from .chat_input import apply_defaults, simple_messages
from .engines.base import EngineStream
from .errors import ErrorKind, ServiceError
from .media import NormalizedImage
from .schemas import AnalyzeResponse, ImageSize, InferResponse, SamplingFields, Usage
from .sse import iter_events


def _request(services: Services, model: str | None, prompt: str, image: NormalizedImage | None,
             system_prompt: str | None, sampling: dict[str, Any]) -> dict[str, Any]:
    request = {"model": services.catalog.resolve(model),
               "messages": simple_messages(prompt, image, system_prompt), **sampling}
    return apply_defaults(request, services.settings)


def _text_of(completion: dict[str, Any]) -> tuple[str, str | None]:
    try:
        choice = completion["choices"][0]
        return choice["message"].get("content") or "", choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ServiceError(ErrorKind.UPSTREAM_ERROR, "The engine's answer had no choices.") from None


async def infer(services: Services, *, prompt: str, image: NormalizedImage | None, system_prompt: str | None,
                model: str | None, sampling: dict[str, Any]) -> InferResponse:
    started = time.perf_counter()
    request = _request(services, model, prompt, image, system_prompt, sampling)
    completion = await services.engine.chat(request)
    text, finish = _text_of(completion)
    return InferResponse(text=text, model=completion.get("model", request["model"]),
                         usage=Usage(**(completion.get("usage") or {})), finish_reason=finish,
                         latency_ms=round((time.perf_counter() - started) * 1000, 1))


async def infer_stream(services: Services, *, prompt: str, image: NormalizedImage | None,
                       system_prompt: str | None, model: str | None, sampling: dict[str, Any]) -> EngineStream:
    """SSE of `{"text": delta}` events, then one event with finish_reason and usage, then [DONE]."""
    request = _request(services, model, prompt, image, system_prompt, sampling)
    request.update(stream=True, stream_options={"include_usage": True})
    upstream = await services.engine.open_stream(request)
    return EngineStream(_text_deltas(upstream, request["model"]), on_close=upstream.aclose)


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
    final["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    yield oai.sse(final)
    yield oai.DONE


async def analyze(services: Services, *, task: str, image: NormalizedImage, question: str | None,
                  prompt: str | None, language: str | None, model: str | None,
                  sampling: SamplingFields) -> AnalyzeResponse:
    text_prompt = task_prompt(task, question=question, language=language, override=prompt)
    result = await infer(services, prompt=text_prompt, image=image, system_prompt=None, model=model,
                         sampling=sampling.model_dump(include=set(SamplingFields.model_fields), exclude_none=True))
    return AnalyzeResponse(task=task, result=parse_result(task, result.text), text=result.text,
                           model=result.model, usage=result.usage, latency_ms=result.latency_ms,
                           image=ImageSize(width=image.width, height=image.height))
