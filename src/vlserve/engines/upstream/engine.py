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
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp

from vlserve import json_bytes
from vlserve.config import Settings
from vlserve.engines.base import EngineInfo, EngineRequest, EngineStatus, EngineStream
from vlserve.engines.upstream.answer_rewrite import StreamRewriter, rewrite_completion
from vlserve.engines.upstream.dialect import UpstreamDialect
from vlserve.engines.upstream.errors import transport_error, upstream_error
from vlserve.engines.upstream.lmdeploy_compat import checked_completion
from vlserve.engines.upstream.relay import StreamRelay
from vlserve.engines.upstream.replicas import Lease, Replica, ReplicaSet
from vlserve.engines.upstream.stream_start import read_opening
from vlserve.engines.upstream.transport import (
    AiohttpTransport,
    IdleWatch,
    Transport,
    UpstreamResponse,
    UpstreamTimeouts,
)
from vlserve.errors import ErrorKind, ServiceError
from vlserve.openai_types import Completion, EngineBody, Usage

log = logging.getLogger("vlserve.upstream")


_NO_DEADLINE = contextlib.nullcontext()
_PATHS = {"chat": "/v1/chat/completions", "text": "/v1/completions"}

TransportFactory = Callable[[Settings], Transport]


def aiohttp_transport(settings: Settings) -> Transport:
    return AiohttpTransport(settings.upstream_max_connections)


# What one attempt on one replica came to (besides a 200, or a failure to pass on).
@dataclass(frozen=True)
class TryElsewhere:
    """The replica failed in a way another may not: take it out, send the request elsewhere."""

    reason: str


@dataclass(frozen=True)
class SendAgain:
    """The replica refused a field the gateway added: send it again without that field."""


Outcome = UpstreamResponse | TryElsewhere | SendAgain


class UpstreamEngine:
    def __init__(self, settings: Settings, transport: TransportFactory = aiohttp_transport) -> None:
        self._settings = settings
        self._timeouts = UpstreamTimeouts.from_settings(settings)
        self.replicas = ReplicaSet(settings.upstream_base_url, settings.upstream_connect_timeout_s)
        self._dialect = UpstreamDialect(settings.upstream_mm_kwargs, settings.upstream_guided_decoding,
                                        settings.upstream_image_uuids)
        self._make_transport = transport
        self._transport: Transport | None = None

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        self._transport = self._make_transport(self._settings)
        if self._transport.probe_session is not None:
            self.replicas.start(self._transport.probe_session)

    async def close(self) -> None:
        self.replicas.close()
        if self._transport is not None:
            await self._transport.close()

    @property
    def transport(self) -> Transport | None:
        return self._transport

    async def wait_ready(self, timeout: float) -> bool:
        return await self.replicas.wait_ready(timeout)

    def mark_down(self, reason: str) -> None:
        """Known to be gone (the launcher saw the process exit): 503 now, not at the next probe."""
        self.replicas.mark_down(reason)

    def status(self) -> EngineStatus:
        states = [replica.state() for replica in self.replicas.replicas]
        ready = [state for state in states if state.ready]
        info: EngineInfo = {"engine": "upstream", "max_model_len": self._settings.max_model_len}
        if ready:
            models = list(dict.fromkeys(m for state in ready for m in state.models))
            return EngineStatus(True, "ready", models, states, info=info, max_model_len=self._settings.max_model_len)
        return EngineStatus(False, "waiting for the upstream engine: " + (states[0].error or ""), [], states,
                            info=info)

    # --- requests ---------------------------------------------------------------------
    async def complete(self, request: EngineRequest) -> Completion:
        resp, lease = await self._open(request, stream=False)
        try:
            body = await _read(resp)
        finally:
            resp.release()
            lease.release()
        try:
            completion = json_bytes.loads(body)
        except ValueError:
            raise ServiceError(ErrorKind.UPSTREAM_ERROR, "The engine sent a response that is not JSON.") from None
        checked = checked_completion(completion)
        return rewrite_completion(checked, request.model) if request.kind == "chat" else checked

    async def open_stream(self, request: EngineRequest) -> EngineStream:
        deadline = time.monotonic() + self._timeouts.total_s
        resp, lease = await self._open(request, stream=True)
        silence = IdleWatch(self._timeouts.idle_s, resp.close)  # a closed response ends its reading
        opening = b""
        if request.image_pixels is not None:  # it could be sent again smaller: stream_start.py
            try:
                opening = await read_opening(resp.content.iter_any(), request.max_tokens)
                if silence.expired:
                    raise TimeoutError()
            except BaseException as exc:
                silence.stop()
                resp.close()
                lease.release()
                if isinstance(exc, (aiohttp.ClientError, TimeoutError)):
                    raise self._silence_error() if silence.expired else transport_error(exc) from None
                raise

        def report(usage: Usage) -> None:
            stream.usage = usage

        rewriter = StreamRewriter(request.model) if request.kind == "chat" else None
        stream = EngineStream(self._relay(resp, silence, deadline, report, rewriter, opening),
                              on_close=resp.close, on_abort=resp.close)
        stream.add_close_callback(lease.release)
        stream.add_close_callback(silence.stop)  # a stream closed before its first chunk was asked for
        return stream

    async def _open(self, request: EngineRequest, stream: bool) -> tuple[UpstreamResponse, Lease]:
        """A 200 response from a replica that serves the model, and the lease on it.

        The lease is given back here on every failure, cancellation included.
        """
        tried: list[Replica] = []
        while True:
            lease = self.replicas.lease(request.model, exclude=tried)
            replica = lease.replica
            may_fail_over = not tried and self.replicas.others_ready(replica, request.model)
            try:
                outcome = await self._attempt(replica, request, stream, may_fail_over)
            except BaseException:
                lease.release()
                raise
            if not isinstance(outcome, (TryElsewhere, SendAgain)):
                return outcome, lease
            lease.release()
            if isinstance(outcome, TryElsewhere):
                self.replicas.take_out(replica, outcome.reason)
                tried.append(replica)

    async def _attempt(self, replica: Replica, request: EngineRequest, stream: bool,
                       may_fail_over: bool) -> Outcome:
        body, added = self._dialect.body_for(request, replica)
        try:
            resp = await self._send(replica, _PATHS[request.kind], body, stream)
        except ServiceError as exc:
            # A timeout may still be running there: only a refused connection is sent twice.
            if exc.kind is ErrorKind.ENGINE_UNAVAILABLE and may_fail_over:
                return TryElsewhere(exc.message)
            raise
        if resp.status == 200:
            return resp
        try:
            error = upstream_error(resp.status, await _read(resp), resp.headers)
        finally:
            resp.release()
        if resp.status >= 500 and may_fail_over:
            return TryElsewhere(f"answered HTTP {resp.status}")
        if self._dialect.refused(replica, added, error):
            return SendAgain()
        raise error

    async def _send(self, replica: Replica, path: str, body: EngineBody, stream: bool) -> UpstreamResponse:
        assert self._transport is not None, "start() first"
        url, data = f"{replica.base_url}{path}", json_bytes.dumps(body)
        timeout, first_byte_s = self._timeouts.client_timeout(stream), self._timeouts.first_byte(stream)
        # A whole answer's first byte is within aiohttp's total timeout already, which raises
        # the same TimeoutError; only a stream's needs a deadline of its own.
        try:
            async with asyncio.timeout(first_byte_s) if stream else _NO_DEADLINE:
                try:
                    return await self._transport.post(url, data, timeout)
                except aiohttp.ClientConnectorError:
                    raise  # nothing was sent: failing over is _open's decision
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                    # Closed under the request before any answer: most often a kept-alive
                    # connection the upstream closed as it was reused. Sent once more on a
                    # new connection, as HTTP clients resend idempotent requests (RFC 9112
                    # 9.3.1); a generation has no effect beyond its answer.
                    log.info("upstream %s closed the connection before answering (%s); sending again",
                             replica.base_url, type(exc).__name__)
                    return await self._transport.post(url, data, timeout, new_connection=True)
        except TimeoutError:
            raise ServiceError(ErrorKind.UPSTREAM_TIMEOUT, f"The model engine did not start answering within "
                               f"{first_byte_s:g} s.") from None
        except aiohttp.ClientError as exc:
            raise transport_error(exc) from None

    async def _relay(self, resp: UpstreamResponse, silence: IdleWatch, deadline: float,
                     report_usage: Callable[[Usage], None],
                     rewriter: StreamRewriter | None, opening: bytes = b"") -> AsyncIterator[bytes]:
        finished = False
        relay = StreamRelay(report_usage, rewriter)
        try:
            out = relay.feed(opening) if opening else b""
            if out:
                yield out
            if relay.failed:
                return
            async for chunk in resp.content.iter_any():
                silence.saw_chunk()
                out = relay.feed(chunk)
                if out:
                    yield out
                if relay.failed:
                    return  # an error event ends the stream; closing drops the upstream request
                if time.monotonic() > deadline:
                    yield ServiceError(ErrorKind.UPSTREAM_TIMEOUT, "The answer took longer than "
                                       f"{self._settings.upstream_timeout_s:g} s (UPSTREAM_TIMEOUT_S).").sse_event()
                    return
            if silence.expired:
                raise TimeoutError()
            tail = relay.finish()
            if tail:
                yield tail
            finished = True
            if not relay.done:  # cut short, or not SSE at all
                yield ServiceError(ErrorKind.UPSTREAM_ERROR, "The engine's stream ended before it was "
                                   "complete.").sse_event()
        except (aiohttp.ClientError, TimeoutError) as exc:
            yield self._silence_error().sse_event() if silence.expired else transport_error(exc).sse_event()
        finally:
            silence.stop()
            if finished:
                resp.release()
            else:  # client gone or upstream broke: drop the connection so the engine aborts
                resp.close()

    def _silence_error(self) -> ServiceError:
        return ServiceError(ErrorKind.UPSTREAM_TIMEOUT, f"The model engine sent nothing for "
                            f"{self._timeouts.idle_s:g} s (UPSTREAM_IDLE_TIMEOUT_S).")


async def _read(resp: UpstreamResponse) -> bytes:
    try:
        return await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise transport_error(exc) from None
