"""The application factory. The lifespan owns every resource: engine, HTTP sessions, NVML."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send

from vlserve.admission import Admission
from vlserve.config import Settings
from vlserve.engines.base import Engine
from vlserve.gateway.catalog import ModelCatalog
from vlserve.gateway.engine_call import Inference
from vlserve.gateway.request_builder import RequestBuilder
from vlserve.gateway.smaller_images import ImageShrinker
from vlserve.media import MediaNormalizer, MediaPolicy, make_fetch_session, tune_allocator
from vlserve.server.auth import ApiKeyAuth
from vlserve.server.body_limit import BodySizeLimit
from vlserve.server.error_handlers import install_error_handlers
from vlserve.server.gpu import GpuMonitor
from vlserve.server.hot_routes import HotRoutes
from vlserve.server.limits import RATE_LIMIT_HEADERS, LimitsGate
from vlserve.server.observability import IMAGES_SHRUNK_HEADER, Metrics, Observe
from vlserve.server.routes import admin, documents, openai, ops, pages, simple
from vlserve.server.routes.body import document_bodies
from vlserve.server.state import AppState
from vlserve.tenancy.keys import KeySource
from vlserve.tenancy.quota import Quota

log = logging.getLogger("vlserve")


def make_engine(settings: Settings) -> Engine:
    if settings.engine_kind == "upstream":
        from vlserve.engines.upstream.engine import UpstreamEngine
        return UpstreamEngine(settings)
    from vlserve.engines.local.engine import LocalEngine  # imports nothing heavy until the model loads
    return LocalEngine(settings)


def make_quota(settings: Settings) -> Quota:
    # A place in flight is leased for longer than a request may last (a long PDF's pages go
    # in rounds), so a gateway that died mid-request holds its key's places no longer.
    lease_s = max(2 * 3600.0, 4 * settings.upstream_timeout_s)
    return Quota(settings.usage_file, settings.redis_url, settings.redis_timeout_s, settings.limits_on_store_error,
                 lease_s)


def reload_keys_on_sighup(keys: KeySource) -> None:
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, keys.reload)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), or no SIGHUP
        log.debug("SIGHUP does not reload keys here; a changed API_KEYS_FILE still does")


class VLServeApp(FastAPI):
    """FastAPI, but a request to a hot route goes straight to `hot_routes`, which runs it
    under this app's middleware without FastAPI's own layers (hot_routes.py)."""

    hot_routes: HotRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hot_routes is not None and self.hot_routes.serves(scope):
            await self.hot_routes(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, engine: Engine | None = None, gpu: GpuMonitor | None = None) -> FastAPI:
    metrics = Metrics()
    keys = KeySource(settings.api_keys, settings.api_keys_file)
    quota = make_quota(settings)
    metrics.watch_quota(quota)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        the_engine = engine or make_engine(settings)
        monitor = gpu or GpuMonitor()
        policy = MediaPolicy.from_settings(settings)
        fetch_session = make_fetch_session(policy) if settings.media_allow_remote else None
        media: MediaNormalizer | None = None
        watch = asyncio.get_running_loop().create_task(keys.watch())
        reload_keys_on_sighup(keys)
        tune_allocator()
        try:
            monitor.start()
            await the_engine.start()
            media = MediaNormalizer(policy, fetch_session, on_image=metrics.count_image,
                                    cache_bytes=settings.media_cache_bytes)
            metrics.watch_image_cache(media.cache)
            admission = Admission(settings.max_concurrent_requests, settings.max_queued_requests,
                                  settings.queue_timeout_s)
            inference = Inference(the_engine, admission,
                                  ImageShrinker(media) if settings.media_retry_smaller else None)
            catalog = ModelCatalog(settings, the_engine)
            app.state.vlserve = AppState(settings, inference, RequestBuilder(settings, catalog, media), catalog,
                                         monitor, metrics, keys, quota)
            metrics.watch(inference)
            yield
        finally:  # also when start-up itself failed: nothing is left open
            watch.cancel()
            await quota.close()
            await the_engine.close()
            if fetch_session is not None:
                await fetch_session.close()
            if media is not None:
                media.close()
            monitor.close()

    # redirect_slashes=False: `/v1/models/` is a 404 envelope, never a redirect built from
    # the client's own Host header. FastAPI's own OpenTelemetry is off: it looks up three
    # providers in the environment on every request (3% of a small request's CPU), and
    # the service's metrics are its Prometheus ones (FastAPI before 0.145 ignores the key).
    app = VLServeApp(title="vlserve", version="0.1.0", lifespan=lifespan, redirect_slashes=False,
                  telemetry={"tracing": False, "metrics": False, "logs": False},
                  docs_url=None, redoc_url=None,  # served offline by routes/pages.py
                  description="OpenAI-compatible serving for Qwen3-VL and other vision-language models.")
    install_error_handlers(app)
    app.include_router(openai.router)
    document_bodies(app, openai.BODIES_READ_BY_HAND)
    for router in (simple.router, documents.router, ops.router, admin.router, pages.router):
        app.include_router(router)
    pages.mount_assets(app)
    _add_middleware(app, settings, keys, quota, metrics)
    app.hot_routes = HotRoutes(app, {"/v1/chat/completions": openai.answer_chat})
    return app


def _add_middleware(app: FastAPI, settings: Settings, keys: KeySource, quota: Quota, metrics: Metrics) -> None:
    """Outermost last: Observe, CORS, the key check, the body cap, the key's limits."""
    app.add_middleware(LimitsGate, quota=quota, aliases=lambda: app.state.vlserve.catalog.aliases())
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(ApiKeyAuth, keys=keys, open_ops=settings.auth_open_ops)
    if settings.cors_allow_origins:  # outside the key check: a browser's preflight carries no key
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_allow_origins, allow_methods=["*"],
                           allow_headers=["*"], max_age=600,
                           expose_headers=["X-Request-ID", "Retry-After", IMAGES_SHRUNK_HEADER, *RATE_LIMIT_HEADERS])
    app.add_middleware(Observe, metrics=metrics)  # outermost: 401s and 413s are counted and logged too
