"""API keys, as OpenAI clients send them: `Authorization: Bearer <key>`.

Pure ASGI middleware (no per-request Starlette objects). Every configured key is
compared with `hmac.compare_digest`, all of them every time, so the time taken says
nothing about how close a guess was. Keys are never logged.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from vlserve.errors import ErrorKind, ServiceError
from vlserve.server.error_handlers import json_error

# Always reachable without a key: the playground page, the interactive docs, the schema
# they read and their files (the pages ask for the key and send it with API calls).
PUBLIC_PATHS = frozenset({"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
PUBLIC_PREFIXES = ("/playground/", "/docs-assets/")
OPS_PATHS = frozenset({"/health", "/metrics"})


def key_matches(candidate: bytes, keys: list[bytes]) -> bool:
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key)
    return matched


class ApiKeyAuth:
    def __init__(self, app: ASGIApp, keys: list[str], open_ops: bool) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]
        self.open_paths = PUBLIC_PATHS | (OPS_PATHS if open_ops else frozenset())

    def _is_open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(PUBLIC_PREFIXES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or self._is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            error = ServiceError(ErrorKind.UNAUTHORIZED, "Missing API key: send it as 'Authorization: Bearer <key>'.",
                                 headers={"WWW-Authenticate": "Bearer"})
        elif not key_matches(token.strip(), self.keys):
            error = ServiceError(ErrorKind.UNAUTHORIZED, "Incorrect API key.", headers={"WWW-Authenticate": "Bearer"})
        else:
            await self.app(scope, receive, send)
            return
        await json_error(error)(scope, receive, send)
