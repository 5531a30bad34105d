"""UpstreamEngine: forwards chat completions (and the completions API) to OpenAI-compatible
servers (LMDeploy, vLLM, ...).

One pooled aiohttp session for the life of the app. Streams are relayed as the raw bytes
the upstream sends, chunk by chunk as they arrive, after its status has been checked; a
stream closed early (client gone) closes the upstream connection, which is how LMDeploy
and vLLM learn to abort the generation.

Until an upstream answers `GET /v1/models`, the engine is not ready (health is 503) and
a background probe keeps trying, so the gateway may start before its engine. With
several replicas (replicas.py), a request goes to one that serves its model; one that
fails before its first byte reached the client (connection refused, 5xx) is sent once
more to another replica; never after. A connection closed under a request before any
answer (a kept-alive one the upstream just timed out) is resent once on a new connection.
The gateway's optional fields are spelled and learned by upstream_dialect.py.

Timeouts: UPSTREAM_CONNECT_TIMEOUT_S to connect; UPSTREAM_FIRST_BYTE_TIMEOUT_S until a
stream's response starts; UPSTREAM_IDLE_TIMEOUT_S for any silence within a body;
UPSTREAM_TIMEOUT_S for the whole request. Each is a 504, or a final SSE error event once
a stream has begun; the upstream connection is closed, which cancels the generation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson

from vlserve.config import Settings
from vlserve.engines.base import EngineRequest, EngineStatus, EngineStream
from vlserve.engines.upstream.answer_rewrite import StreamRewriter, rewrite_completion
from vlserve.engines.upstream.dialect import UpstreamDialect
from vlserve.engines.upstream.errors import transport_error, upstream_error
from vlserve.engines.upstream.lmdeploy_compat import check_completion
from vlserve.engines.upstream.relay import StreamRelay
from vlserve.engines.upstream.replicas import Lease, Replica, ReplicaSet
from vlserve.errors import ErrorKind, ServiceError

log = logging.getLogger("vlserve.upstream")


_PATHS = {"chat": "/v1/chat/completions", "text": "/v1/completions"}
# uvicorn, which LMDeploy, vLLM and this gateway run on, closes a connection after 5 s
# idle. A pooled connection kept longer than that is reused just as the upstream closes
# it, and the request fails though nothing is wrong: so none is reused after 4 s.
KEEPALIVE_S = 4.0


class _TryAgain(Exception):
    """This attempt failed in a way another attempt may not (the replica is named in `take_out`)."""

    def __init__(self, take_out: str | None) -> None:
        super().__init__(take_out)
        self.take_out = take_out


class UpstreamEngine:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.replicas = ReplicaSet(settings.upstream_base_url, settings.upstream_connect_timeout_s)
        self._dialect = UpstreamDialect(settings.upstream_mm_kwargs, settings.upstream_guided_decoding)
        self._session: aiohttp.ClientSession | None = None
        self._fresh_session: aiohttp.ClientSession | None = None  # new connections only: for resends

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        limit = self._settings.upstream_max_connections
        pooled = aiohttp.TCPConnector(limit=limit, keepalive_timeout=KEEPALIVE_S, enable_cleanup_closed=True)
        fresh = aiohttp.TCPConnector(limit=limit, force_close=True, enable_cleanup_closed=True)
        no_timeout = aiohttp.ClientTimeout(total=None)
        self._session = aiohttp.ClientSession(connector=pooled, trust_env=False, timeout=no_timeout)
        self._fresh_session = aiohttp.ClientSession(connector=fresh, trust_env=False, timeout=no_timeout)
        self.replicas.start(self._session)

    async def close(self) -> None:
        self.replicas.close()
        for session in (self._session, self._fresh_session):
            if session:
                await session.close()

    async def wait_ready(self, timeout: float) -> bool:
        return await self.replicas.wait_ready(timeout)

    def mark_down(self, reason: str) -> None:
        """Known to be gone (the launcher saw the process exit): 503 now, not at the next probe."""
        self.replicas.mark_down(reason)

    def status(self) -> EngineStatus:
        states = [replica.state() for replica in self.replicas.replicas]
        ready = [state for state in states if state.ready]
        info = {"engine": "upstream", "max_model_len": self._settings.max_model_len}
        if ready:
            models = list(dict.fromkeys(m for state in ready for m in state.models))
            return EngineStatus(True, "ready", models, states, info=info, max_model_len=self._settings.max_model_len)
        return EngineStatus(False, "waiting for the upstream engine: " + (states[0].error or ""), [], states,
                            info=info)

    # --- requests ---------------------------------------------------------------------
    async def complete(self, request: EngineRequest) -> dict[str, Any]:
        # A non-streamed answer arrives whole: UPSTREAM_TIMEOUT_S bounds it all.
        timeout = aiohttp.ClientTimeout(total=self._settings.upstream_timeout_s,
                                        sock_connect=self._settings.upstream_connect_timeout_s)
        resp, lease = await self._open(request, timeout, first_byte_s=self._settings.upstream_timeout_s)
        try:
            body = await _read(resp)
        finally:
            resp.release()
            lease.release()
        try:
            completion = json.loads(body)
        except ValueError:
            raise ServiceError(ErrorKind.UPSTREAM_ERROR, "The engine sent a response that is not JSON.") from None
        check_completion(completion)
        return rewrite_completion(completion) if request.kind == "chat" else completion

    async def open_stream(self, request: EngineRequest) -> EngineStream:
        settings = self._settings
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.upstream_connect_timeout_s,
                                        sock_read=settings.upstream_idle_timeout_s)
        deadline = time.monotonic() + settings.upstream_timeout_s
        resp, lease = await self._open(request, timeout, first_byte_s=settings.upstream_first_byte_timeout_s)

        def report(usage: dict[str, Any]) -> None:
            stream.usage = usage

        rewriter = StreamRewriter(request.model) if request.kind == "chat" else None
        stream = EngineStream(self._relay(resp, deadline, report, rewriter),
                              on_close=resp.close, on_abort=resp.close)
        stream.add_close_callback(lease.release)
        return stream

    async def _open(self, request: EngineRequest, timeout: aiohttp.ClientTimeout,
                    first_byte_s: float) -> tuple[aiohttp.ClientResponse, Lease]:
        """A 200 response from a replica that serves the model, and the lease on it.

        The lease is given back here on every failure, cancellation included.
        """
        tried: list[Replica] = []
        while True:
            lease = self.replicas.lease(request.model, exclude=tried)
            replica = lease.replica
            may_fail_over = not tried and self.replicas.others_ready(replica, request.model)
            try:
                return await self._attempt(replica, request, timeout, first_byte_s, may_fail_over), lease
            except _TryAgain as again:
                lease.release()
                if again.take_out is not None:
                    self.replicas.take_out(replica, again.take_out)
                    tried.append(replica)
            except BaseException:
                lease.release()
                raise

    async def _attempt(self, replica: Replica, request: EngineRequest, timeout: aiohttp.ClientTimeout,
                       first_byte_s: float, may_fail_over: bool) -> aiohttp.ClientResponse:
        body, added = self._dialect.body_for(request, replica)
        try:
            resp = await self._send(replica, _PATHS[request.kind], body, timeout, first_byte_s)
        except ServiceError as exc:
            # A timeout may still be running there: only a refused connection is sent twice.
            if exc.kind is ErrorKind.ENGINE_UNAVAILABLE and may_fail_over:
                raise _TryAgain(take_out=exc.message) from None
            raise
        if resp.status == 200:
            return resp
        try:
            error = upstream_error(resp.status, await _read(resp), resp.headers)
        finally:
            resp.release()
        if resp.status >= 500 and may_fail_over:
            raise _TryAgain(take_out=f"answered HTTP {resp.status}")
        if self._dialect.refused(replica, added, error):
            raise _TryAgain(take_out=None)  # the same request without what it refused
        raise error

    async def _send(self, replica: Replica, path: str, body: dict[str, Any], timeout: aiohttp.ClientTimeout,
                    first_byte_s: float) -> aiohttp.ClientResponse:
        assert self._session is not None and self._fresh_session is not None, "start() first"
        url, data = f"{replica.base_url}{path}", _encoded(body)
        try:
            async with asyncio.timeout(first_byte_s):
                try:
                    return await self._session.post(url, data=data, headers=_JSON, timeout=timeout)
                except aiohttp.ClientConnectorError:
                    raise  # nothing was sent: failing over is _open's decision
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                    # Closed under the request before any answer: most often a kept-alive
                    # connection the upstream closed as it was reused. Sent once more on a
                    # new connection, as HTTP clients resend idempotent requests (RFC 9112
                    # 9.3.1); a generation has no effect beyond its answer.
                    log.info("upstream %s closed the connection before answering (%s); sending again",
                             replica.base_url, type(exc).__name__)
                    return await self._fresh_session.post(url, data=data, headers=_JSON, timeout=timeout)
        except TimeoutError:
            raise ServiceError(ErrorKind.UPSTREAM_TIMEOUT, f"The model engine did not start answering within "
                               f"{first_byte_s:g} s.") from None
        except aiohttp.ClientError as exc:
            raise transport_error(exc) from None

    async def _relay(self, resp: aiohttp.ClientResponse, deadline: float,
                     report_usage: Callable[[dict[str, Any]], None],
                     rewriter: StreamRewriter | None) -> AsyncIterator[bytes]:
        finished = False
        relay = StreamRelay(report_usage, rewriter)
        try:
            async for chunk in resp.content.iter_any():
                out = relay.feed(chunk)
                if out:
                    yield out
                if relay.failed:
                    return  # an error event ends the stream; closing drops the upstream request
                if time.monotonic() > deadline:
                    yield ServiceError(ErrorKind.UPSTREAM_TIMEOUT, "The answer took longer than "
                                       f"{self._settings.upstream_timeout_s:g} s (UPSTREAM_TIMEOUT_S).").sse_event()
                    return
            tail = relay.finish()
            if tail:
                yield tail
            finished = True
            if not relay.done:  # cut short, or not SSE at all
                yield ServiceError(ErrorKind.UPSTREAM_ERROR, "The engine's stream ended before it was "
                                   "complete.").sse_event()
        except (aiohttp.ClientError, TimeoutError) as exc:
            yield transport_error(exc).sse_event()
        finally:
            if finished:
                resp.release()
            else:  # client gone or upstream broke: drop the connection so the engine aborts
                resp.close()


_JSON = {"Content-Type": "application/json"}


def _encoded(body: dict[str, Any]) -> bytes:
    """The request as JSON, by orjson: a 1 MB image's base64 takes it ~0.08 ms, json.dumps
    ~2 ms. orjson refuses integers beyond 64 bits, which a client may send (a seed, say):
    those requests go through json."""
    try:
        return orjson.dumps(body)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(body).encode()


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    try:
        return await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise transport_error(exc) from None
