"""The in-process tier: the real app in the test's own event loop, reached through httpx's
ASGITransport, with a scripted engine. Routes, middleware, validation and error
rendering are checked here in milliseconds; tests/integration/ keeps what needs a socket
(slow clients, disconnects, real engines, processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest

from vlserve.config import Settings
from vlserve.server.app import create_app

from ..scripted_engine import ScriptedEngine

AppClient = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture
def app_client(engine: ScriptedEngine, tmp_path) -> AppClient:
    """`async with app_client(**settings) as client`: the app started (its lifespan run)."""

    @asynccontextmanager
    async def started(**settings: object) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(Settings(VLSERVE_CACHE_DIR=str(tmp_path), MEDIA_ALLOW_REMOTE="false", **settings),
                         engine=engine)
        async with app.router.lifespan_context(app):
            # raise_app_exceptions=False: as under uvicorn, an unhandled error is the 500 the client gets.
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000), raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://vlserve.test") as client:
                yield client

    return started


@pytest.fixture
async def client(app_client: AppClient) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client() as started:
        yield started
