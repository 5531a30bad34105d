"""The hot routes: POST /v1/chat/completions served as a plain ASGI app.

It runs under the same middleware as every route (the request log and metrics, keys, the
body cap, limits), but not through FastAPI's exception middleware, router, request
objects and dependency solving, which together cost more than everything else a small
request does (bench/RESULTS.md). FastAPI keeps the route, which runs the same function,
for the OpenAPI document and the interactive docs. Failures are answered exactly as
FastAPI's handlers answer them (`error_handlers.error_response_for`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from vlserve.server.error_handlers import error_response_for

Handler = Callable[[Scope, Receive], Awaitable[Response]]


@dataclass(frozen=True)
class MatchedRoute:
    """What FastAPI's router leaves in `scope["route"]`, as far as the request log and the
    metrics read it."""

    path: str


class HotRoutes:
    """Innermost middleware: serves POST to the paths in `handlers` itself."""

    def __init__(self, app: ASGIApp, handlers: dict[str, Handler]) -> None:
        self.app = app
        self._handlers = handlers
        self._routes = {path: MatchedRoute(path) for path in handlers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self._handlers.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self._routes[scope["path"]]
        try:
            response = await handler(scope, receive)
        except Exception as exc:  # every failure becomes its error response, as under FastAPI
            response = error_response_for(exc, scope["method"], scope["path"])
        await response(scope, receive, send)
