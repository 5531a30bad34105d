"""Operations: /health for load balancers, /gpu/status for people, /metrics for Prometheus."""

from __future__ import annotations

import asyncio
import dataclasses

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vlserve.server.routes.deps import CatalogDep, GpuDep, InferenceDep, MetricsDep

router = APIRouter(tags=["Operations"])


@router.get("/health")
async def health(inference: InferenceDep, catalog: CatalogDep, gpu: GpuDep) -> JSONResponse:
    status = inference.engine.status()
    body: dict[str, object] = {
        "status": "ok" if status.ready else "unavailable",
        "ready": status.ready,
        "detail": status.detail,
        "models": catalog.advertised() if status.ready else [],
        "gpu_count": gpu.count(),
        **status.info,
    }
    if status.replicas:
        body["replicas"] = [dataclasses.asdict(replica) for replica in status.replicas]
    return JSONResponse(body, status_code=200 if status.ready else 503)


@router.get("/metrics", response_class=Response)
async def metrics(registry: MetricsDep) -> Response:
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/gpu/status")
async def gpu_status(gpu: GpuDep) -> dict[str, object]:
    return dict(await asyncio.to_thread(gpu.status))
