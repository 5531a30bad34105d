"""Request body cap, as pure ASGI middleware (no BaseHTTPMiddleware on the hot path)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vlserve.errors import ErrorKind, ServiceError
from vlserve.server.error_handlers import json_error


class BodySizeLimit:
    """Refuse bodies over `max_bytes` with 413: by Content-Length at once, else while reading."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return f"The request body is larger than the limit of {self.max_bytes:,} bytes (MAX_REQUEST_BYTES)."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked = None, False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        declared = int(length) if length is not None and length.isdigit() else None
        if declared is not None and declared > self.max_bytes:
            await json_error(ServiceError(ErrorKind.TOO_LARGE, self._message()))(scope, receive, send)
            return
        if declared is not None and not chunked:
            # The HTTP parser delivers exactly Content-Length bytes: nothing to count.
            await self.app(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes through FastAPI's body parsing unchanged.
                    raise HTTPException(413, detail=self._message())
            return message

        await self.app(scope, counting_receive, send)
