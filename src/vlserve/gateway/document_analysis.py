"""/analyze on a PDF: each page is one engine call, many in flight, results in page order.

Every page goes through the one engine-call path (admission, replicas, cancel on
disconnect) as its own /analyze of one image. A page that fails is tried once more, then
reported in its entry; the answer says how many failed. The top-level result merges the
pages where that means something: `document` one Markdown (or HTML) with page markers,
`ocr` the text by page, `extract` one object from all pages (or one per page with
`per_page`); for the other tasks it is the list of the pages' results. With `stream`,
each page is sent as an SSE event as soon as it is done, so a long document shows
progress.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from vlserve import sse
from vlserve.analysis import TaskInput
from vlserve.errors import ServiceError
from vlserve.gateway import oneshot
from vlserve.gateway.engine_call import CallContext, ClientGone, Inference
from vlserve.gateway.request_builder import RequestBuilder
from vlserve.gateway.schemas import AnalyzeResponse, ImageSize, PageResult, Usage
from vlserve.media.pdf import RenderedPage
from vlserve.openai_types import JSONObject

# A page's result, the model that answered it, and its error when it failed.
Answer = tuple[PageResult, str | None, ServiceError | None]


@dataclass
class DocumentJob:
    """The pages of one PDF, read through the engine for one /analyze request."""

    inference: Inference
    builder: RequestBuilder
    ctx: CallContext
    spec: TaskInput
    rendered: list[RenderedPage]
    per_page: bool
    model: str | None
    sampling: JSONObject
    schema: JSONObject | None
    pages_in_flight: int = 16  # engine calls of this document at once (MEDIA_PDF_PAGES_IN_FLIGHT)
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self._turns = asyncio.Semaphore(self.pages_in_flight)

    async def _read(self, page: RenderedPage) -> Answer:
        async with self._turns:
            return await _page(self.inference, self.builder, self.ctx, page, spec=self.spec, model=self.model,
                               sampling=self.sampling, schema=self.schema)

    async def run(self) -> AnalyzeResponse:
        try:  # a client that leaves cancels every page still running or waiting
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._read(page)) for page in self.rendered]
        except* ClientGone:
            raise ClientGone() from None
        answers = [task.result() for task in tasks]
        _raise_if_none_read(answers)
        return self.response(answers)

    async def events(self) -> AsyncIterator[bytes]:
        """SSE: each page as it is done (`{"page", "result", ...}`), then the whole answer,
        then [DONE]. Closing the stream (the client left) cancels the pages still to come."""
        tasks = [asyncio.ensure_future(self._read(page)) for page in self.rendered]
        try:
            for finished in asyncio.as_completed(tasks):
                try:
                    result, _, _ = await finished
                except ClientGone:  # the response's own listener ends the stream
                    return
                yield sse.frame(result.model_dump())
            answers = [task.result() for task in tasks]
            try:
                _raise_if_none_read(answers)
            except ServiceError as error:
                yield error.sse_event()
                return
            yield sse.frame(self.response(answers).model_dump())
            yield sse.DONE
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def response(self, answers: list[Answer]) -> AnalyzeResponse:
        results = [result for result, _, _ in answers]
        answered_by = next((model_id for _, model_id, _ in answers if model_id), self.model or "")
        done = [r for r in results if r.error is None]
        usage = Usage(prompt_tokens=sum(r.usage.prompt_tokens for r in results),
                      completion_tokens=sum(r.usage.completion_tokens for r in results),
                      total_tokens=sum(r.usage.total_tokens for r in results))
        first = results[0].image or ImageSize(width=self.rendered[0].width, height=self.rendered[0].height)
        return AnalyzeResponse(task=self.spec.task, result=merged(self.spec, done, self.per_page),
                               text=_joined_text(done), model=answered_by, usage=usage,
                               latency_ms=oneshot.ms_since(self.started), image=first, pages=results,
                               pages_failed=len(results) - len(done))


async def document_job(inference: Inference, builder: RequestBuilder, ctx: CallContext, *, spec: TaskInput,
                       data: bytes, pages: list[int] | None, per_page: bool, model: str | None,
                       sampling: JSONObject, schema: JSONObject | None) -> DocumentJob:
    """The PDF rendered (its errors are the request's), ready to be read page by page."""
    _, rendered = await builder.media.pdf_pages(data, pages)
    return DocumentJob(inference, builder, ctx, spec, rendered, per_page, model, sampling, schema,
                       builder.media.policy.pdf.pages_in_flight)


async def _page(inference: Inference, builder: RequestBuilder, ctx: CallContext, page: RenderedPage, *,
                spec: TaskInput, model: str | None, sampling: JSONObject,
                schema: JSONObject | None) -> Answer:
    error: ServiceError | None = None
    for _ in range(2):  # a failed page is tried once more...
        try:
            image = await builder.page_image(page.jpeg)
            answer = await oneshot.analyze(inference, builder, ctx, spec=spec, images=[image], model=model,
                                           sampling=dict(sampling), schema=schema)
        except ServiceError as exc:
            error = exc
            if exc.status in (429, 503):  # ...but not one refused for a limit or an engine away: not now
                break
            continue
        return PageResult(page=page.number, result=answer.result, text=answer.text, image=answer.image,
                          usage=answer.usage), answer.model, None
    assert error is not None
    return PageResult(page=page.number, error=error.body()["error"]), None, error


def _raise_if_none_read(answers: list[Answer]) -> None:
    """No page was read: the request failed, with the first page's error (its status, its
    Retry-After), not a 200 full of failures."""
    errors = [error for _, _, error in answers]
    if errors and all(errors) and errors[0] is not None:
        raise errors[0]


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
