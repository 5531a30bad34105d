"""One-shot inference behind /infer and /analyze: a prompt and a few images → text.

Both build an ordinary engine request (engine_requests.py) and run it through the one
engine-call path (inference.py), like /v1/chat/completions; this module only adds the
simpler input and output shapes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace

from vlserve import sse
from vlserve.analysis import TaskInput, build_prompt, check_input, extract, parse_result
from vlserve.engines.base import EngineRequest, EngineStream
from vlserve.errors import ErrorKind, ServiceError
from vlserve.gateway.engine_call import CallContext, Inference
from vlserve.gateway.request_builder import RequestBuilder
from vlserve.gateway.schemas import AnalyzeResponse, ImageSize, InferResponse, Usage
from vlserve.media import NormalizedImage
from vlserve.openai_types import ChatMessage, Completion, JSONObject, usage_from
from vlserve.sse import iter_events


def _message_of(completion: Completion) -> tuple[ChatMessage, str | None]:
    """The answer's message and finish reason."""
    choices = completion["choices"]
    message = choices[0].get("message") if choices else None
    if not message:
        raise ServiceError(ErrorKind.UPSTREAM_ERROR, "The engine's answer had no choices.")
    return message, choices[0].get("finish_reason")


def _answer_text(completion: Completion) -> tuple[str, str | None]:
    """The answer's text (never its reasoning: engines split that off) and finish reason."""
    message, finish = _message_of(completion)
    content = message.get("content")
    return content if isinstance(content, str) else "", finish


def _reasoning_of(completion: Completion) -> str | None:
    message, _ = _message_of(completion)
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    return reasoning if isinstance(reasoning, str) else None


def _usage(completion: Completion) -> Usage:
    usage = usage_from(completion.get("usage"))
    return Usage(**usage) if usage else Usage()


def ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


async def infer(inference: Inference, request: EngineRequest, ctx: CallContext) -> InferResponse:
    started = time.perf_counter()
    completion = await inference.complete(request, ctx)
    text, finish = _answer_text(completion)
    return InferResponse(text=text, reasoning=_reasoning_of(completion), model=completion.get("model", request.model),
                         usage=_usage(completion), finish_reason=finish, latency_ms=ms_since(started))


async def infer_stream(inference: Inference, request: EngineRequest, ctx: CallContext) -> EngineStream:
    """SSE of `{"text": delta}` events, then one event with finish_reason and usage, then [DONE]."""
    request.body["stream"], request.body["stream_options"] = True, {"include_usage": True}
    upstream = await inference.stream(request, ctx)
    stream = EngineStream(_text_deltas(upstream, request.model), on_close=upstream.aclose, on_abort=upstream.abort)
    return stream


async def _text_deltas(upstream: EngineStream, model: str) -> AsyncIterator[bytes]:
    started = time.perf_counter()
    final: dict[str, object] = {"text": "", "finish_reason": None, "usage": None, "model": model}
    async with aclosing(iter_events(upstream)) as events:
        async for event in events:
            if event is None:
                break
            if "error" in event:  # already in our error shape: pass it on and stop
                yield sse.frame(event)
                return
            final["usage"] = event.get("usage") or final["usage"]
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("reasoning_content"):
                    yield sse.frame({"reasoning": delta["reasoning_content"]})
                if delta.get("content"):
                    yield sse.frame({"text": delta["content"]})
                final["finish_reason"] = choice.get("finish_reason") or final["finish_reason"]
    final["latency_ms"] = ms_since(started)
    yield sse.frame(final)
    yield sse.DONE


async def analyze(inference: Inference, builder: RequestBuilder, ctx: CallContext, *, spec: TaskInput,
                  images: list[NormalizedImage], model: str | None, sampling: JSONObject,
                  schema: JSONObject | None = None) -> AnalyzeResponse:
    started = time.perf_counter()
    task = check_input(spec, has_schema=schema is not None)
    request = builder.simple(prompt=build_prompt(spec), images=images, system_prompt=None, model=model,
                             sampling=sampling)
    reasoning = None
    if task.needs_schema:
        text, usage, result, model_id = await _extract(inference, ctx, request, schema or {})
    else:
        completion = await inference.complete(request, ctx)
        text, reasoning = _answer_text(completion)[0], _reasoning_of(completion)
        usage, model_id = _usage(completion), completion.get("model", request.model)
        result = parse_result(spec, text, images[0].width, images[0].height)
    sizes = [ImageSize(width=i.width, height=i.height) for i in images]
    return AnalyzeResponse(task=spec.task, result=result, text=text, reasoning=reasoning, model=model_id, usage=usage,
                           latency_ms=ms_since(started), image=sizes[0], images=sizes if len(sizes) > 1 else None)


async def _extract(inference: Inference, ctx: CallContext, request: EngineRequest,
                   schema: JSONObject) -> tuple[str, Usage, object, str]:
    """Guided decoding where the engine has it; validate; one repair turn; else 422."""
    schema = extract.check_schema(schema)
    messages = request.body.get("messages") or []
    content = messages[-1].get("content")  # builder.simple(): the user message ends with the prompt's text
    assert isinstance(content, list)
    content[-1]["text"] = extract.schema_prompt(content[-1].get("text") or "", schema)
    request.json_schema = schema  # a hint: engines with guided decoding constrain the answer
    completion = await inference.complete(request, ctx)
    text, usage = _answer_text(completion)[0], _usage(completion)
    value, problem = extract.validate(text, schema)
    if problem is not None:
        turn: list[ChatMessage] = [{"role": "assistant", "content": text},
                                   {"role": "user", "content": extract.repair_message(problem)}]
        repair = replace(request, body={**request.body, "messages": messages + turn})
        completion = await inference.complete(repair, ctx)
        text = _answer_text(completion)[0]
        usage = _add(usage, _usage(completion))
        value, problem = extract.validate(text, schema)
        if problem is not None:
            raise extract.extraction_failed(problem, text)
    return text, usage, value, completion.get("model", request.model)


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(prompt_tokens=a.prompt_tokens + b.prompt_tokens,
                 completion_tokens=a.completion_tokens + b.completion_tokens,
                 total_tokens=a.total_tokens + b.total_tokens)
