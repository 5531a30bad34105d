"""The hot routes: POST /v1/chat/completions served as a plain ASGI app.

A request to a hot route runs through the app's own middleware (the request log and
metrics, keys, the body cap, limits: the same list, built a second time around the
handler) but through none of FastAPI's: not its outer shell (the server-error and
telemetry layers, which wrap every message sent), router, request objects or dependency
solving, which together cost more than everything else a small request does
(bench/RESULTS.md). FastAPI keeps the route, which runs the same function, for the
OpenAPI document and the interactive docs. Failures are answered exactly as FastAPI's
handlers answer them (`error_handlers.error_response_for`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import FastAPI
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
    """Serves POST to the paths in `handlers` under `app`'s middleware, without FastAPI."""

    def __init__(self, app: FastAPI, handlers: dict[str, Handler]) -> None:
        self._app = app
        self._handlers = handlers
        self._routes = {path: MatchedRoute(path) for path in handlers}
        # Built at the first request, as Starlette builds its own, from the list as it is then:
        # middleware added later (Starlette refuses that once started) would not be in it.
        self._stack: ASGIApp | None = None

    def serves(self, scope: Scope) -> bool:
        return scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self._handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self._app
        if self._app.root_path:
            scope["root_path"] = self._app.root_path
        if self._stack is None:
            self._stack = self._middleware_around(self._serve)
        try:
            await self._stack(scope, receive, send)
        except Exception as exc:  # a middleware's own failure: FastAPI's outer layer would answer it
            observation = scope.get("state", {}).get("observation")
            if observation is not None and observation.started:
                raise  # too late for an answer: the server drops the connection
            await error_response_for(exc, scope["method"], scope["path"])(scope, receive, send)

    def _middleware_around(self, inner: ASGIApp) -> ASGIApp:
        """The app's middleware list (outermost first), built around `inner`."""
        for cls, args, kwargs in reversed(self._app.user_middleware):
            inner = cls(inner, *args, **kwargs)
        return inner

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self._routes[scope["path"]]
        try:
            response = await self._handlers[scope["path"]](scope, receive)
        except Exception as exc:  # every failure becomes its error response, as under FastAPI
            response = error_response_for(exc, scope["method"], scope["path"])
        await response(scope, receive, send)
