"""The engine protocol: what the gateway needs from something that runs the model.

Engines take and give OpenAI-shaped dicts. A request reaching an engine has already
been validated, its images are data URLs, its `model` is the engine's own id and its
sampling defaults are filled in. Engines know nothing of FastAPI.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class EngineStatus:
    ready: bool
    detail: str
    models: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    kind: str  # "local" or "upstream"

    async def start(self) -> None:
        """Begin loading/connecting. Returns quickly; `status()` says when it is ready."""

    async def close(self) -> None:
        """Release every resource; pending requests fail with 503."""

    def status(self) -> EngineStatus:
        """Cheap readiness snapshot, safe to call every second."""

    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming chat completion (OpenAI `chat.completion` object)."""

    async def open_stream(self, request: dict[str, Any]) -> EngineStream:
        """Start a streaming chat completion.

        Failures that happen before the first byte (bad request, engine down) raise
        ServiceError here, so the gateway can still answer with a proper status. The
        returned stream yields SSE bytes (`data: {...}\\n\\n` ... `data: [DONE]\\n\\n`);
        closing it early cancels the generation.
        """


class EngineStream:
    """The SSE bytes of one streaming completion, with a close that always releases it.

    An async generator that was never started runs no `finally` when closed; a response
    that ends before its first chunk (client gone at once) would leak the upstream
    connection or the engine's queue slot. `aclose()` here also runs `on_close`.
    """

    def __init__(self, chunks: AsyncIterator[bytes], on_close: Callable[[], Any] | None = None,
                 on_abort: Callable[[], Any] | None = None) -> None:
        self._chunks = chunks
        self._on_abort = on_abort
        self.aborted = False
        self._on_close: list[Callable[[], Any]] = [on_close] if on_close else []
        self._closed = False
        self.usage: dict[str, int] | None = None  # set by the engine when the stream reports it

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    def abort(self) -> None:
        """Stop early (server shutting down): the relay ends at its next chunk, and
        `on_abort` wakes one that is waiting (e.g. by closing the upstream connection)."""
        self.aborted = True
        if self._on_abort is not None:
            self._on_abort()

    def add_close_callback(self, callback: Callable[[], Any]) -> None:
        self._on_close.append(callback)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._chunks.aclose()
        finally:
            for callback in self._on_close:
                result = callback()
                if inspect.isawaitable(result):
                    await result
