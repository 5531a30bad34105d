"""HTTP around an engine call: the JSON of a whole answer, the SSE response of a stream, and
noticing a client that left."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from vlserve import json_bytes
from vlserve.engines.base import EngineStream
from vlserve.gateway.engine_call import CallContext, ClientGone, until_gone
from vlserve.gateway.observation import Observation
from vlserve.server.connection_events import connection_lost

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class JSONBytesResponse(JSONResponse):
    """JSON written by orjson (json_bytes.py): Starlette's JSONResponse uses `json.dumps`,
    which costs more than the rest of writing a small answer."""

    def render(self, content: object) -> bytes:
        return json_bytes.dumps(content)

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        if headers is not None or self.status_code < 200 or self.status_code in (204, 304):
            super().init_headers(headers)
            return
        # The usual answer's two headers, made directly: Starlette's general way, for any
        # media type and headers, was a measurable part of a small answer.
        self.raw_headers = [(b"content-length", b"%d" % len(self.body)), (b"content-type", b"application/json")]


class EngineStreamResponse(StreamingResponse):
    """SSE of an engine stream, closed in this response's own `finally`.

    Whatever ends the response (the last chunk, a client that left before the first or
    in the middle, an error in the relay), the stream is closed, which gives back its
    admission place and replica slot and cancels the generation. (Starlette's own
    response would leave that to a background task, which a disconnect skips under ASGI
    spec 2.4, and there it only notices a client that left when a chunk fails to send,
    so a stream waiting on a silent engine would hold its place.) Here the disconnect is
    listened for under every spec version, while the chunks are sent.
    """

    def __init__(self, stream: EngineStream) -> None:
        super().__init__(stream, media_type="text/event-stream", headers=SSE_HEADERS)
        self.engine_stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The chunks are sent from this task, which until_gone cancels if the client hangs
        # up (told by the connection, or heard on `receive`), as it does for engine calls.
        ctx = call_context(scope, receive)
        try:
            await until_gone(self.stream_response(send), ctx)
        except (ClientGone, OSError):  # heard leaving, or a send that failed (ASGI 2.4)
            ctx.obs.client_left = True
        finally:
            await self.engine_stream.aclose()


def client_gone(receive: Receive) -> Callable[[], Awaitable[None]]:
    """An awaitable factory that returns once the client has disconnected.

    Only used while no response is being sent (the body has been read by then), so
    nothing else is reading `receive`.
    """

    async def wait() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    return wait


def call_context(scope: Scope, receive: Receive) -> CallContext:
    """The request's observation (set up by the Observe middleware) and its disconnect."""
    state = scope.setdefault("state", {})
    obs = state.setdefault("observation", Observation("-"))
    return CallContext(obs, client_gone(receive), state.get("ticket"), connection_lost(scope))
