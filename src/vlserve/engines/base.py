"""The engine protocol: what the gateway needs from something that runs the model.

Engines take an `EngineRequest` (an OpenAI-shaped chat body that has already been
validated: images are data URLs, `model` is the engine's own id, sampling defaults are
filled in) plus the hints the gateway adds, and give OpenAI-shaped answers. Each engine
turns the hints into its own dialect, or leaves out what it can't use; nothing outside
`engines/` knows an engine's quirks. Engines know nothing of FastAPI.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Protocol

from vlserve.errors import ErrorKind, ServiceError
from vlserve.openai_types import Completion, EngineBody, JSONObject, Kind, Usage, max_tokens_of

log = logging.getLogger("vlserve.engine")


@dataclass
class EngineRequest:
    """One chat completion (or completions-API prompt) for an engine.

    `body` is what the client asked for (unknown fields pass through), with the gateway's
    defaults. The rest is what the gateway adds: optional, so an engine that can't use a
    hint leaves it out.
    """

    body: EngineBody
    kind: Kind = "chat"  # "chat" (messages) or "text" (the completions API: a raw prompt)
    image_pixels: tuple[int, int] | None = None  # (min, max) pixels the images were prepared for
    image_ids: tuple[str, ...] = ()  # each image_url part's content id, in message order (vLLM's `uuid`)
    json_schema: JSONObject | None = None         # the answer should validate against this (guided decoding)
    token_bound: int | None = None  # the most tokens (prompt + answer) it can use: what a token limit reserves
    visuals: int = 0                # images and videos it sends

    @property
    def model(self) -> str:
        return self.body["model"]

    @property
    def max_tokens(self) -> int | None:
        """The most tokens to generate (the request builder always sets it; None only for a
        request made by hand, which gets the engine's default)."""
        return max_tokens_of(self.body)

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


@dataclass(frozen=True)
class ReplicaState:
    """One upstream server as health and metrics see it."""

    url: str
    ready: bool
    in_flight: int
    models: tuple[str, ...]
    error: str | None


EngineInfo = dict[str, str | int | float | None]  # bools are ints


@dataclass
class EngineStatus:
    ready: bool
    detail: str
    models: list[str] = field(default_factory=list)
    replicas: list[ReplicaState] = field(default_factory=list)
    # The context the engine enforces (prompt + answer tokens), which the gateway checks
    # requests against: the model's own limit when it is below MAX_MODEL_LEN.
    max_model_len: int | None = None
    # Engine-specific facts for /health (device, max_model_len, ...); read by nothing else.
    info: EngineInfo = field(default_factory=dict)


class Engine(Protocol):
    async def start(self) -> None:
        """Begin loading/connecting. Returns quickly; `status()` says when it is ready."""

    async def close(self) -> None:
        """Release every resource; pending requests fail with 503."""

    def status(self) -> EngineStatus:
        """Cheap readiness snapshot, safe to call every second."""

    async def complete(self, request: EngineRequest) -> Completion:
        """A whole answer: OpenAI's `chat.completion` object, or `text_completion` for kind "text"."""

    async def open_stream(self, request: EngineRequest) -> EngineStream:
        """Start a streaming answer (chat, or the completions API's for kind "text").

        Failures that happen before the first byte (bad request, engine down, no place in
        the engine's queue) raise ServiceError here, so the gateway can still answer with
        a proper status. The returned stream yields SSE bytes (`data: {...}\\n\\n` ...
        `data: [DONE]\\n\\n`); closing it early cancels the generation.
        """


# Run once when a stream is closed; may return an awaitable (awaited) or anything else (ignored).
CloseCallback = Callable[[], Awaitable[object] | object]

SHUTDOWN_MESSAGE = "The server is shutting down; the answer was cut short. Retry the request."


class EngineStream:
    """The SSE bytes of one streaming completion, with a close that always releases it.

    An async generator that was never started runs no `finally` when closed; a response
    that ends before its first chunk (client gone at once) would leak the upstream
    connection or the engine's place. `aclose()` here closes the chunks and then runs
    every close callback, exactly once, whatever ended the stream.

    `abort()` (server shutting down) ends the stream at its next chunk with a final
    error event; `on_abort` wakes a stream that is waiting (e.g. closes its connection).
    """

    def __init__(self, chunks: AsyncIterator[bytes], on_close: CloseCallback | None = None,
                 on_abort: Callable[[], object] | None = None) -> None:
        self._chunks = chunks
        self._on_abort = on_abort
        self.aborted = False
        self._on_close: list[CloseCallback] = [on_close] if on_close else []
        self._closed = False
        self.usage: Usage | None = None  # set by the engine when the stream reports it
        self.chunks_sent = 0  # an estimate of the tokens sent, when the client leaves before `usage`

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._relay()

    async def _relay(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            if self.aborted:
                break
            self.chunks_sent += 1
            yield chunk
        if self.aborted:
            yield ServiceError(ErrorKind.ENGINE_UNAVAILABLE, SHUTDOWN_MESSAGE).sse_event()

    def map_chunks(self, change: Callable[[bytes], bytes]) -> None:
        """Pass every chunk through `change` on its way out (e.g. a note in the usage event)."""
        self._chunks = _mapped(self._chunks, change)

    def abort(self) -> None:
        self.aborted = True
        if self._on_abort is not None:
            self._on_abort()

    def add_close_callback(self, callback: CloseCallback) -> None:
        self._on_close.append(callback)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._chunks.aclose()  # type: ignore[attr-defined]
        finally:
            for callback in self._on_close:  # each runs, even when one before it failed
                try:
                    result = callback()
                    if result is not None and inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("a stream's close callback failed")


async def _mapped(chunks: AsyncIterator[bytes], change: Callable[[bytes], bytes]) -> AsyncIterator[bytes]:
    async with aclosing(chunks):  # type: ignore[type-var]  # an async generator, closed with this one
        async for chunk in chunks:
            yield change(chunk)
