"""OpenAI-compatible routes: /v1/models and /v1/chat/completions."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..chat_input import build_chat_request
from ..schemas import ChatCompletionRequest
from .deps import ObservationDep, ServicesDep
from .streaming import (ClientGone, admitted, admitted_stream, cancel_on_disconnect, client_gone_response,
                        report_stream_usage, sse_response)

router = APIRouter(tags=["OpenAI-compatible"])


@router.get("/v1/models")
async def list_models(services: ServicesDep) -> dict:
    created = int(time.time())
    return {"object": "list", "data": [
        {"id": model, "object": "model", "created": created, "owned_by": "vlserve"}
        for model in services.catalog.advertised()]}


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request, services: ServicesDep,
                           obs: ObservationDep) -> Response:
    obs.model = engine_model = services.catalog.resolve(body.model)
    payload = await build_chat_request(body, engine_model, services.settings, services.media)
    if body.stream:
        stream = await admitted_stream(services, lambda: services.engine.open_stream(payload))
        return sse_response(report_stream_usage(stream, obs), services)
    try:
        result = await cancel_on_disconnect(request, admitted(services, services.engine.chat(payload)))
        obs.add_usage(result.get("usage"))
        return JSONResponse(result)
    except ClientGone:
        return client_gone_response()
