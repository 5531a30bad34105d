"""Operations: /health for load balancers, /gpu/status for people."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .deps import ServicesDep

router = APIRouter(tags=["Operations"])


@router.get("/health")
async def health(services: ServicesDep) -> JSONResponse:
    status = services.engine.status()
    body = {
        "status": "ok" if status.ready else "unavailable",
        "ready": status.ready,
        "detail": status.detail,
        "models": services.catalog.advertised() if status.ready else [],
        "gpu_count": services.gpu.count(),
        **status.info,
    }
    return JSONResponse(body, status_code=200 if status.ready else 503)


@router.get("/metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/gpu/status")
async def gpu_status(services: ServicesDep) -> dict:
    return await asyncio.to_thread(services.gpu.status)
