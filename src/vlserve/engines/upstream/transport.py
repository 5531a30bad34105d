"""How the upstream engine reaches its servers: one timeouts value, the watch on a stream's
silences, and a transport that sends a POST and hands back the response, which tests
replace with a scripted one.

`AiohttpTransport` is the real one: one pooled aiohttp session for the app's life, and a
second that opens a new connection for every request, for the one resend of a request
whose kept-alive connection closed under it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from vlserve.config import Settings
from vlserve.deadline import Deadline

# uvicorn, which LMDeploy, vLLM and this gateway run on, closes a connection after 5 s
# idle. A pooled connection kept longer than that is reused just as the upstream closes
# it, and the request fails though nothing is wrong: so none is reused after 4 s.
KEEPALIVE_S = 4.0


@dataclass(frozen=True)
class UpstreamTimeouts:
    """UPSTREAM_CONNECT_TIMEOUT_S to connect; UPSTREAM_FIRST_BYTE_TIMEOUT_S until a stream's
    response starts; UPSTREAM_IDLE_TIMEOUT_S for any silence within a streamed body;
    UPSTREAM_TIMEOUT_S for the whole request (a whole answer's first byte included)."""

    connect_s: float
    first_byte_s: float
    idle_s: float
    total_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> UpstreamTimeouts:
        return cls(settings.upstream_connect_timeout_s, settings.upstream_first_byte_timeout_s,
                   settings.upstream_idle_timeout_s, settings.upstream_timeout_s)

    def first_byte(self, stream: bool) -> float:
        return self.first_byte_s if stream else self.total_s

    def client_timeout(self, stream: bool) -> aiohttp.ClientTimeout:
        """aiohttp's timeouts for one request. A whole answer's are the whole bound; a
        stream's deadline is checked between chunks, its silences by IdleWatch."""
        return self._for_stream if stream else self._for_answer

    @functools.cached_property
    def _for_answer(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.total_s, sock_connect=self.connect_s)

    @functools.cached_property
    def _for_stream(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=None, sock_connect=self.connect_s)


class IdleWatch:
    """Calls `on_idle` once a stream has been silent for `idle_s`.

    aiohttp's own `sock_read` timeout cancels and sets a timer on every read, which was a
    measurable part of relaying a chunk; a `Deadline` moved by each chunk fires once per
    `idle_s` of streaming, whatever the chunks.
    """

    def __init__(self, idle_s: float, on_idle: Callable[[], object]) -> None:
        self._deadline = Deadline(asyncio.get_running_loop())
        self._on_idle = on_idle
        self.expired = False
        # Called for every chunk: a partial, not a method calling another.
        self.saw_chunk: Callable[[], None] = functools.partial(self._deadline.set_in, idle_s, self._expire)
        self.saw_chunk()

    def _expire(self) -> None:
        self.expired = True
        self._on_idle()

    def stop(self) -> None:
        self._deadline.stop()


class ChunkSource(Protocol):
    def iter_any(self) -> AsyncIterator[bytes]: ...


class UpstreamResponse(Protocol):
    """What the engine reads of a response (aiohttp's ClientResponse has all of it)."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content(self) -> ChunkSource: ...
    async def read(self) -> bytes: ...
    def release(self) -> object: ...
    def close(self) -> None: ...


class Transport(Protocol):
    async def post(self, url: str, data: bytes, timeout: aiohttp.ClientTimeout, *,
                   new_connection: bool = False) -> UpstreamResponse:
        """Send a JSON body; raises aiohttp's errors (ClientConnectorError: nothing was
        sent; ServerDisconnectedError/ClientOSError: closed before any answer)."""

    @property
    def probe_session(self) -> aiohttp.ClientSession | None:
        """The session replicas are probed with (None: no probing, as in unit tests)."""

    async def close(self) -> None: ...


_JSON = {"Content-Type": "application/json"}


class AiohttpTransport:
    def __init__(self, max_connections: int) -> None:
        pooled = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=KEEPALIVE_S,
                                      enable_cleanup_closed=True)
        fresh = aiohttp.TCPConnector(limit=max_connections, force_close=True, enable_cleanup_closed=True)
        no_timeout = aiohttp.ClientTimeout(total=None)
        self._pooled = aiohttp.ClientSession(connector=pooled, trust_env=False, timeout=no_timeout)
        self._fresh = aiohttp.ClientSession(connector=fresh, trust_env=False, timeout=no_timeout)

    @property
    def probe_session(self) -> aiohttp.ClientSession:
        return self._pooled

    async def post(self, url: str, data: bytes, timeout: aiohttp.ClientTimeout, *,
                   new_connection: bool = False) -> aiohttp.ClientResponse:
        session = self._fresh if new_connection else self._pooled
        return await session.post(url, data=data, headers=_JSON, timeout=timeout)

    async def close(self) -> None:
        await self._pooled.close()
        await self._fresh.close()
