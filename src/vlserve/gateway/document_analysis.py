"""/analyze on a PDF: each page is one engine call, many in flight, results in page order.

Every page goes through the one engine-call path (admission, replicas, cancel on
disconnect) as its own /analyze of one image. A page that fails is tried once more, then
reported in its entry; the answer says how many failed. The top-level result merges the
pages where that means something: `document` one Markdown (or HTML) with page markers,
`ocr` the text by page, `extract` one object from all pages (or one per page with
`per_page`); for the other tasks it is the list of the pages' results.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from vlserve.analysis import TaskInput
from vlserve.errors import ServiceError
from vlserve.gateway import oneshot
from vlserve.gateway.engine_call import CallContext, ClientGone, Inference
from vlserve.gateway.request_builder import RequestBuilder
from vlserve.gateway.schemas import AnalyzeResponse, ImageSize, PageResult, Usage
from vlserve.media.pdf import RenderedPage
from vlserve.openai_types import JSONObject

PAGES_IN_FLIGHT = 8  # engine calls of one document at once; admission limits the whole server


async def analyze_pdf(inference: Inference, builder: RequestBuilder, ctx: CallContext, *, spec: TaskInput,
                      data: bytes, pages: list[int] | None, per_page: bool, model: str | None,
                      sampling: JSONObject, schema: JSONObject | None) -> AnalyzeResponse:
    started = time.perf_counter()
    _, rendered = await builder.media.pdf_pages(data, pages)
    turns = asyncio.Semaphore(PAGES_IN_FLIGHT)

    async def read(page: RenderedPage) -> tuple[PageResult, str | None]:
        async with turns:
            return await _page(inference, builder, ctx, page, spec=spec, model=model, sampling=sampling,
                               schema=schema)

    try:  # a client that leaves cancels every page still running or waiting
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(read(page)) for page in rendered]
    except* ClientGone:
        raise ClientGone() from None
    answers = [task.result() for task in tasks]
    results = [result for result, _ in answers]
    answered_by = next((model_id for _, model_id in answers if model_id), model or "")
    done = [r for r in results if r.error is None]
    usage = Usage()
    for r in results:
        usage = Usage(prompt_tokens=usage.prompt_tokens + r.usage.prompt_tokens,
                      completion_tokens=usage.completion_tokens + r.usage.completion_tokens,
                      total_tokens=usage.total_tokens + r.usage.total_tokens)
    first = results[0].image or ImageSize(width=rendered[0].width, height=rendered[0].height)
    return AnalyzeResponse(task=spec.task, result=merged(spec, done, per_page), text=_joined_text(done),
                           model=answered_by, usage=usage, latency_ms=oneshot.ms_since(started),
                           image=first, pages=results, pages_failed=len(results) - len(done))


async def _page(inference: Inference, builder: RequestBuilder, ctx: CallContext, page: RenderedPage, *,
                spec: TaskInput, model: str | None, sampling: JSONObject,
                schema: JSONObject | None) -> tuple[PageResult, str | None]:
    error: ServiceError | None = None
    for _ in range(2):  # a failed page is tried once more
        try:
            image = await builder.page_image(page.jpeg)
            answer = await oneshot.analyze(inference, builder, ctx, spec=spec, images=[image], model=model,
                                           sampling=dict(sampling), schema=schema)
        except ServiceError as exc:
            error = exc
            continue
        except ClientGone:
            raise
        return PageResult(page=page.number, result=answer.result, text=answer.text, image=answer.image,
                          usage=answer.usage), answer.model
    assert error is not None
    return PageResult(page=page.number, error=error.body()["error"]), None


def _marker(page: int) -> str:
    return f"<!-- page {page} -->"


def _joined_text(done: list[PageResult]) -> str:
    return "\n\n".join(f"{_marker(r.page)}\n{r.text or ''}" for r in done)


def merged(spec: TaskInput, done: list[PageResult], per_page: bool) -> Any:
    """The pages' results as one, in the single image's shape where there is one."""
    if spec.task == "document":  # {"markdown": ...} or {"html": ...}
        return {spec.format: _joined(done, lambda result: result.get(spec.format))}
    if spec.task == "ocr":
        return {"text": _joined(done, _ocr_text)}
    if spec.task == "extract" and not per_page:
        return _merge_objects([r.result for r in done])
    return [r.result for r in done]


def _joined(done: list[PageResult], text_of: Any) -> str:
    return "\n\n".join(f"{_marker(r.page)}\n{text_of(r.result) or ''}" for r in done if isinstance(r.result, dict))


def _ocr_text(result: dict[str, Any]) -> str:
    if isinstance(result.get("text"), str):
        return result["text"]
    return "\n".join(str(line.get("text", "")) for line in result.get("lines") or [] if isinstance(line, dict))


def _merge_objects(objects: list[Any]) -> Any:
    """One object from every page's: a field's first value that is not empty; lists joined."""
    out: dict[str, Any] = {}
    for value in objects:
        if not isinstance(value, dict):
            continue
        for key, item in value.items():
            if isinstance(item, list):
                out[key] = [*out.get(key, []), *item]
            elif key not in out or out[key] in (None, "", {}):
                out[key] = item
    return out
