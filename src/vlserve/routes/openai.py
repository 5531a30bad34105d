"""OpenAI-compatible routes: /v1/models and /v1/chat/completions."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from ..schemas import ChatCompletionRequest
from .deps import CallDep, CatalogDep, InferenceDep, RequestsDep
from .streaming import EngineStreamResponse

router = APIRouter(tags=["OpenAI-compatible"])


@router.get("/v1/models")
async def list_models(catalog: CatalogDep) -> dict:
    created = int(time.time())
    return {"object": "list", "data": [
        {"id": model, "object": "model", "created": created, "owned_by": "vlserve"}
        for model in catalog.advertised()]}


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, requests: RequestsDep, inference: InferenceDep,
                           call: CallDep) -> Response:
    request = await requests.from_chat(body)
    if request.stream:
        return EngineStreamResponse(await inference.stream(request, call))
    return JSONResponse(await inference.complete(request, call))
