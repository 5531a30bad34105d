"""Simple endpoints for people who just want to ask about an image: /infer and /analyze.

Each has a JSON form and a multipart form (`/upload`) that takes the image as a file.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response

from .. import oneshot
from ..chat_input import sampling_dict
from ..errors import ErrorKind, ServiceError
from ..media import MediaNormalizer, NormalizedImage
from ..schemas import AnalyzeRequest, AnalyzeResponse, AnalyzeTask, InferRequest, InferResponse, SamplingFields
from .deps import ServicesDep
from .streaming import ClientGone, cancel_on_disconnect, client_gone_response, sse_response

router = APIRouter(tags=["Simple"])


def sampling_form(
    max_tokens: Annotated[int | None, Form(ge=1)] = None,
    temperature: Annotated[float | None, Form(ge=0, le=2)] = None,
    top_p: Annotated[float | None, Form(gt=0, le=1)] = None,
    top_k: Annotated[int | None, Form(ge=0)] = None,
    seed: Annotated[int | None, Form()] = None,
) -> SamplingFields:
    return SamplingFields(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)


SamplingFormDep = Annotated[SamplingFields, Depends(sampling_form)]


async def read_upload(upload: UploadFile, media: MediaNormalizer) -> NormalizedImage:
    limit = media.policy.max_image_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ServiceError(ErrorKind.TOO_LARGE, f"The uploaded image is larger than the limit of {limit:,} bytes.")
    return await media.image_from_bytes(data)


async def _infer(request: Request, services, *, stream: bool, **kwargs) -> Response | InferResponse:
    if stream:
        return sse_response(await oneshot.infer_stream(services, **kwargs))
    try:
        return await cancel_on_disconnect(request, oneshot.infer(services, **kwargs))
    except ClientGone:
        return client_gone_response()


@router.post("/infer", response_model=InferResponse,
             responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE with stream=true"}})
async def infer(body: InferRequest, request: Request, services: ServicesDep):
    image = await services.media.image(body.image) if body.image else None
    return await _infer(request, services, stream=body.stream, prompt=body.prompt, image=image,
                        system_prompt=body.system_prompt, model=body.model, sampling=sampling_dict(body))


@router.post("/infer/upload", response_model=InferResponse)
async def infer_upload(
    request: Request, services: ServicesDep, sampling: SamplingFormDep,
    prompt: Annotated[str, Form(min_length=1)],
    image: Annotated[UploadFile | None, File(description="An image file")] = None,
    system_prompt: Annotated[str | None, Form()] = None,
    model: Annotated[str | None, Form()] = None,
    stream: Annotated[bool, Form()] = False,
):
    normalized = await read_upload(image, services.media) if image is not None else None
    return await _infer(request, services, stream=stream, prompt=prompt, image=normalized,
                        system_prompt=system_prompt, model=model, sampling=sampling_dict(sampling))


@router.post("/analyze", response_model=AnalyzeResponse)
async def analyze(body: AnalyzeRequest, services: ServicesDep) -> AnalyzeResponse:
    image = await services.media.image(body.image)
    return await oneshot.analyze(services, task=body.task, image=image, question=body.question,
                                 prompt=body.prompt, language=body.language, model=body.model, sampling=body)


@router.post("/analyze/upload", response_model=AnalyzeResponse)
async def analyze_upload(
    services: ServicesDep, sampling: SamplingFormDep,
    task: Annotated[AnalyzeTask, Form()],
    image: Annotated[UploadFile, File(description="The image to analyse")],
    question: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    language: Annotated[str | None, Form()] = None,
    model: Annotated[str | None, Form()] = None,
) -> AnalyzeResponse:
    normalized = await read_upload(image, services.media)
    return await oneshot.analyze(services, task=task, image=normalized, question=question, prompt=prompt,
                                 language=language, model=model, sampling=sampling)
