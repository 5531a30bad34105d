"""OpenAI-compatible routes: models, chat completions, completions and the Responses API.

Each translates HTTP to one engine call (`Inference`) and back; the Responses API is
translated onto the chat call (responses_api/), so every engine serves it.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.types import Receive, Scope

from vlserve.engines.base import EngineRequest, EngineStream
from vlserve.errors import ErrorKind, ServiceError
from vlserve.gateway.catalog import ModelCatalog
from vlserve.gateway.engine_call import CallContext, Inference
from vlserve.gateway.responses_api import ResponseEvents, ResponsesRequest, from_completion, to_chat_request
from vlserve.gateway.schemas import ChatCompletionRequest, CompletionRequest
from vlserve.server.routes.body import json_body, read_body
from vlserve.server.routes.deps import CallDep, CatalogDep, InferenceDep, RequestsDep
from vlserve.server.routes.streaming import EngineStreamResponse, JSONBytesResponse, call_context
from vlserve.server.state import AppState
from vlserve.tenancy.quota import ANONYMOUS_CALLER, Caller

router = APIRouter(tags=["OpenAI-compatible"])
BODIES_READ_BY_HAND = [ChatCompletionRequest]  # documented by routes/body.document_bodies


def _model_card(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "vlserve"}


def _visible(request: Request, catalog: ModelCatalog) -> list[str]:
    """The models this key may use (all of them without a `models` list)."""
    caller: Caller = request.scope.get("state", {}).get("caller", ANONYMOUS_CALLER)
    models = catalog.advertised()
    if caller.key.models is None:
        return models
    aliases = catalog.aliases()
    return [model for model in models if caller.may_use(model, aliases)]


@router.get("/v1/models")
async def list_models(request: Request, catalog: CatalogDep) -> dict:
    created = int(time.time())
    return {"object": "list", "data": [_model_card(model, created) for model in _visible(request, catalog)]}


@router.get("/v1/models/{model:path}")
async def retrieve_model(model: str, request: Request, catalog: CatalogDep) -> dict:
    visible = _visible(request, catalog)
    if model not in visible:
        raise ServiceError(ErrorKind.MODEL_NOT_FOUND, f"The model {model!r} does not exist here; available: "
                           f"{', '.join(visible) or 'none to this key'}.", param="model")
    return _model_card(model, int(time.time()))


async def answer_chat(scope: Scope, receive: Receive) -> Response:
    """POST /v1/chat/completions from the raw request. The hot route (server/hot_routes.py)
    serves it; the FastAPI route below runs the same code and documents it."""
    # The body is read here rather than declared: FastAPI's body parameter costs a JSON
    # parse, a second pass to validate and a dependency solve per request (bench/RESULTS.md).
    body = await read_body(receive, ChatCompletionRequest)
    state: AppState = scope["app"].state.vlserve
    return await _answer(await state.requests.from_chat(body), state.inference, call_context(scope, receive))


@router.post("/v1/chat/completions", response_model=None, openapi_extra=json_body(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    return await answer_chat(request.scope, request.receive)


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, requests: RequestsDep, inference: InferenceDep,
                      call: CallDep) -> Response:
    return await _answer(requests.from_completion(body), inference, call)


async def _answer(request: EngineRequest, inference: Inference, call: CallContext) -> Response:
    """The engine's answer as it is: streamed as SSE, or whole as JSON."""
    if request.stream:
        return EngineStreamResponse(await inference.stream(request, call))
    return JSONBytesResponse(await inference.complete(request, call))


@router.post("/v1/responses", response_model=None)
async def responses(body: ResponsesRequest, requests: RequestsDep, inference: InferenceDep,
                    call: CallDep) -> Response:
    try:
        chat = ChatCompletionRequest.model_validate(to_chat_request(body))
    except ValidationError as exc:  # what the translation could not make a valid chat request of
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ServiceError(ErrorKind.BAD_REQUEST, f"Invalid request: {where}: {error['msg']}",
                           param=where or None) from None
    request = await requests.from_chat(chat)
    if not request.stream:
        return JSONBytesResponse(from_completion(body, await inference.complete(request, call)))
    stream = await inference.stream(request, call)
    events = ResponseEvents(body, request.model)
    return EngineStreamResponse(EngineStream(events.translate(stream), on_close=stream.aclose))
