"""Simple endpoints for people who just want to ask about an image: /infer and /analyze.

Each has a JSON form and a multipart form (`/upload`) that takes the image as a file.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import Response

from vlserve.analysis import TaskInput
from vlserve.engines.base import EngineStream
from vlserve.errors import ErrorKind, ServiceError
from vlserve.gateway import oneshot
from vlserve.gateway.document_analysis import document_job
from vlserve.gateway.engine_call import CallContext, Inference
from vlserve.gateway.request_builder import RequestBuilder, sampling_dict
from vlserve.gateway.schemas import (
    AnalyzeRequest,
    AnalyzeResponse,
    AnalyzeTask,
    InferRequest,
    InferResponse,
    SamplingFields,
)
from vlserve.media import MediaNormalizer, NormalizedImage
from vlserve.media.encoding import is_image_data_url
from vlserve.media.pdf import is_pdf, parse_pages
from vlserve.openai_types import JSONObject
from vlserve.server.routes.deps import CallDep, InferenceDep, RequestsDep
from vlserve.server.routes.streaming import EngineStreamResponse

router = APIRouter(tags=["Simple"])


async def sampling_form(
    max_tokens: Annotated[int | None, Form(ge=1)] = None,
    temperature: Annotated[float | None, Form(ge=0, le=2)] = None,
    top_p: Annotated[float | None, Form(gt=0, le=1)] = None,
    top_k: Annotated[int | None, Form(ge=0)] = None,
    seed: Annotated[int | None, Form()] = None,
    ignore_eos: Annotated[bool | None, Form()] = None,
) -> SamplingFields:
    return SamplingFields(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                          ignore_eos=ignore_eos)


SamplingFormDep = Annotated[SamplingFields, Depends(sampling_form)]


async def read_upload(upload: UploadFile, media: MediaNormalizer, pdf_too: bool = False) -> bytes:
    """An uploaded image (or, where a PDF is taken, an image or a PDF), within its limit."""
    limit = media.policy.max_image_bytes
    data = await upload.read(max(limit, media.policy.pdf.max_bytes) + 1 if pdf_too else limit + 1)
    if pdf_too and is_pdf(data):
        limit = media.policy.pdf.max_bytes
    if len(data) > limit:
        what = "PDF" if pdf_too and is_pdf(data) else "image"
        raise ServiceError(ErrorKind.TOO_LARGE, f"The uploaded {what} is larger than the limit of {limit:,} bytes.")
    return data


async def _infer(requests, inference, call, *, stream: bool, image: NormalizedImage | None,
                 **fields) -> Response | InferResponse:
    request = requests.simple(images=[image] if image else [], **fields)
    if stream:
        return EngineStreamResponse(await oneshot.infer_stream(inference, request, call))
    return await oneshot.infer(inference, request, call)


@router.post("/infer", response_model=InferResponse,
             responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE with stream=true"}})
async def infer(body: InferRequest, requests: RequestsDep, inference: InferenceDep, call: CallDep):
    image = (await requests.images([body.image]))[0] if body.image else None
    return await _infer(requests, inference, call, stream=body.stream, prompt=body.prompt, image=image,
                        system_prompt=body.system_prompt, model=body.model, sampling=sampling_dict(body))


@router.post("/infer/upload", response_model=InferResponse)
async def infer_upload(
    requests: RequestsDep, inference: InferenceDep, call: CallDep, sampling: SamplingFormDep,
    prompt: Annotated[str, Form(min_length=1)],
    image: Annotated[UploadFile | None, File(description="An image file")] = None,
    system_prompt: Annotated[str | None, Form()] = None,
    model: Annotated[str | None, Form()] = None,
    stream: Annotated[bool, Form()] = False,
):
    normalized = (await requests.images([await read_upload(image, requests.media)]))[0] if image else None
    return await _infer(requests, inference, call, stream=stream, prompt=prompt, image=normalized,
                        system_prompt=system_prompt, model=model, sampling=sampling_dict(sampling))


def _task_input(task: str, image_count: int, *, question, language, objects, boxes, format, prompt) -> TaskInput:
    return TaskInput(task=task, question=question, language=language, objects=tuple(objects or ()),
                     boxes=boxes, format=format, image_count=image_count, prompt=prompt)


@router.post("/analyze", response_model=AnalyzeResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "JSON, or SSE (a PDF with stream=true: an event per page)"}})
async def analyze(body: AnalyzeRequest, requests: RequestsDep, inference: InferenceDep,
                  call: CallDep) -> AnalyzeResponse | Response:
    refs: list[str | bytes] = [*([body.image] if body.image else []), *(body.images or [])]
    if not refs:
        raise ServiceError(ErrorKind.BAD_REQUEST, "Send the image as `image` (or several as `images`).",
                           param="image")
    if len(refs) == 1 and not is_image_data_url(refs[0]):  # one image, or a PDF
        refs = [await requests.media.image_or_pdf(refs[0])]  # (a data URL of an image is looked up as it is)
    spec = _task_input(body.task, len(refs), question=body.question, language=body.language,
                       objects=body.objects, boxes=body.boxes, format=body.format, prompt=body.prompt)
    return await _analyze(requests, inference, call, refs, spec, pages=body.pages, per_page=body.per_page,
                          model=body.model, sampling=sampling_dict(body), schema=body.json_schema, stream=body.stream)


async def _analyze(requests: RequestBuilder, inference: Inference, call: CallContext, sources: list[str | bytes],
                   spec: TaskInput, *, pages: str | None, per_page: bool, model: str | None, sampling: JSONObject,
                   schema: Any, stream: bool = False) -> AnalyzeResponse | Response:
    """Images, or a PDF read page by page (gateway/document_analysis.py)."""
    first = sources[0]
    if len(sources) == 1 and isinstance(first, bytes) and is_pdf(first):
        job = await document_job(inference, requests, call, spec=spec, data=first, pages=parse_pages(pages),
                                 per_page=per_page, model=model, sampling=sampling, schema=schema)
        return EngineStreamResponse(EngineStream(job.events())) if stream else await job.run()
    for name, given in (("pages", pages is not None), ("stream", stream)):
        if given:
            raise ServiceError(ErrorKind.BAD_REQUEST, f"{name} applies to a PDF; this is an image.", param=name)
    images = await requests.images(sources)
    return await oneshot.analyze(inference, requests, call, spec=spec, images=images, model=model,
                                 sampling=sampling, schema=schema)


@router.post("/analyze/upload", response_model=AnalyzeResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "JSON, or SSE (a PDF with stream=true: an event per page)"}})
async def analyze_upload(
    requests: RequestsDep, inference: InferenceDep, call: CallDep, sampling: SamplingFormDep,
    task: Annotated[AnalyzeTask, Form()],
    image: Annotated[list[UploadFile], File(description="The image (repeat the field for task=compare)")],
    question: Annotated[str | None, Form()] = None,
    objects: Annotated[str | None, Form(description="Comma-separated, for detect and point")] = None,
    boxes: Annotated[bool, Form()] = False,
    format: Annotated[Literal["markdown", "html"], Form()] = "markdown",
    json_schema: Annotated[str | None, Form(alias="schema", description="A JSON Schema as JSON text (extract)")] = None,
    prompt: Annotated[str | None, Form()] = None,
    language: Annotated[str | None, Form()] = None,
    model: Annotated[str | None, Form()] = None,
    pages: Annotated[str | None, Form(description="A PDF's pages, e.g. 1-3,7")] = None,
    per_page: Annotated[bool, Form()] = False,
    stream: Annotated[bool, Form(description="A PDF: an SSE event per page")] = False,
) -> AnalyzeResponse | Response:
    requests.media.check_count(len(image))
    sources: list[str | bytes] = [await read_upload(upload, requests.media, pdf_too=len(image) == 1)
                                  for upload in image]
    names = [o.strip() for o in (objects or "").split(",") if o.strip()]
    spec = _task_input(task, len(sources), question=question, language=language, objects=names, boxes=boxes,
                       format=format, prompt=prompt)
    return await _analyze(requests, inference, call, sources, spec, pages=pages, per_page=per_page, model=model,
                          sampling=sampling_dict(sampling), schema=_parse_schema(json_schema), stream=stream)


def _parse_schema(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise ServiceError(ErrorKind.BAD_REQUEST, "`schema` is not valid JSON.", param="schema") from None
