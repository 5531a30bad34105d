"""API keys, as OpenAI clients send them: `Authorization: Bearer <key>`.

Pure ASGI middleware (no per-request Starlette objects). A key is found by its SHA-256
in the key ring (tenancy/keys.py): a dict lookup whose time says nothing about how close
a guess was, whatever the number of keys. The caller (the key, and the user when the
key names a trusted user header) goes into the request's state for the limits, the
usage records and the log. Keys are never logged; authentication never needs Redis.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from vlserve.errors import ErrorKind, ServiceError
from vlserve.server.error_handlers import json_error
from vlserve.tenancy.keys import MAX_USER_CHARS, ApiKey, KeySource
from vlserve.tenancy.quota import ANONYMOUS_CALLER, Caller

# Always reachable without a key: the playground page, the interactive docs, the schema
# they read and their files (the pages ask for the key and send it with API calls).
PUBLIC_PATHS = frozenset({"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
PUBLIC_PREFIXES = ("/playground/", "/docs-assets/")
OPS_PATHS = frozenset({"/health", "/metrics"})
_NOT_PRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def _user(key: ApiKey, headers: list[tuple[bytes, bytes]]) -> str | None:
    """The user the key's trusted front-end names; other keys cannot name one."""
    if key.user_header is None:
        return None
    wanted = key.user_header.encode()
    for name, value in headers:
        if name == wanted:
            user = _NOT_PRINTABLE.sub("", value.decode("utf-8", "replace")).strip()[:MAX_USER_CHARS]
            return user or None
    return None


class ApiKeyAuth:
    def __init__(self, app: ASGIApp, keys: KeySource, open_ops: bool) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = PUBLIC_PATHS | (OPS_PATHS if open_ops else frozenset())

    def _is_open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(PUBLIC_PREFIXES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ring = self.keys.ring
        if scope["type"] != "http" or not ring.required:
            scope.setdefault("state", {})["caller"] = ANONYMOUS_CALLER
            await self.app(scope, receive, send)
            return
        if self._is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        scheme, _, token = header.partition(b" ")
        key = ring.find(token.strip()) if scheme.lower() == b"bearer" and token.strip() else None
        if key is not None:
            scope.setdefault("state", {})["caller"] = Caller(key, _user(key, scope["headers"]))
            await self.app(scope, receive, send)
            return
        message = "Incorrect API key." if token.strip() and scheme.lower() == b"bearer" else \
            "Missing API key: send it as 'Authorization: Bearer <key>'."
        error = ServiceError(ErrorKind.UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})
        await json_error(error)(scope, receive, send)
