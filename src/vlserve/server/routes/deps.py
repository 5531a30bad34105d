"""Small typed dependencies: each route asks for what it uses, nothing more.

They are `async def` so FastAPI calls them on the event loop (a plain `def` would cost a
trip through the threadpool per dependency per request).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from vlserve.gateway.catalog import ModelCatalog
from vlserve.gateway.engine_call import CallContext, Inference
from vlserve.gateway.request_builder import RequestBuilder
from vlserve.server.gpu import GpuMonitor
from vlserve.server.observability import Metrics
from vlserve.server.routes.streaming import call_context
from vlserve.server.state import AppState


def _state(request: Request) -> AppState:
    return request.app.state.vlserve


async def get_inference(request: Request) -> Inference:
    return _state(request).inference


async def get_requests(request: Request) -> RequestBuilder:
    return _state(request).requests


async def get_catalog(request: Request) -> ModelCatalog:
    return _state(request).catalog


async def get_gpu(request: Request) -> GpuMonitor:
    return _state(request).gpu


async def get_metrics(request: Request) -> Metrics:
    return _state(request).metrics


async def get_call(request: Request) -> CallContext:
    return call_context(request.scope, request.receive)


InferenceDep = Annotated[Inference, Depends(get_inference)]
RequestsDep = Annotated[RequestBuilder, Depends(get_requests)]
CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]
GpuDep = Annotated[GpuMonitor, Depends(get_gpu)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
CallDep = Annotated[CallContext, Depends(get_call)]
