"""UpstreamEngine: forwards chat completions to OpenAI-compatible servers (LMDeploy, vLLM, ...).

One pooled aiohttp session for the life of the app. Streams are relayed as the raw bytes
the upstream sends, chunk by chunk as they arrive, after its status has been checked; a
stream closed early (client gone) closes the upstream connection, which is how LMDeploy
and vLLM learn to abort the generation.

Until an upstream answers `GET /v1/models`, the engine is not ready (health is 503) and
a background probe keeps trying, so the gateway may start before its engine. With
several replicas (replicas.py), a request that fails before its first byte reached the
client (connection refused, 5xx) is sent once more to another replica; never after.

Timeouts: UPSTREAM_CONNECT_TIMEOUT_S to connect; UPSTREAM_FIRST_BYTE_TIMEOUT_S until a
stream's response starts; UPSTREAM_IDLE_TIMEOUT_S for any silence within a body;
LMDEPLOY_TIMEOUT_S for the whole request. Each is a 504, or a final SSE error event once
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

from ..config import Settings
from ..errors import ErrorKind, ServiceError
from .base import EngineStatus, EngineStream
from .lmdeploy_compat import StreamTranslator, check_completion, usage_in
from .replicas import Replica, ReplicaSet

log = logging.getLogger("vlserve.upstream")

class UpstreamEngine:
    kind = "upstream"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.replicas = ReplicaSet(settings.lmdeploy_base_url, settings.upstream_connect_timeout_s)
        self._session: aiohttp.ClientSession | None = None

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._settings.upstream_max_connections,
                                         keepalive_timeout=30, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                              timeout=aiohttp.ClientTimeout(total=None))
        self.replicas.start(self._session)

    async def close(self) -> None:
        self.replicas.close()
        if self._session:
            await self._session.close()

    async def wait_ready(self, timeout: float) -> bool:
        return await self.replicas.wait_ready(timeout)

    def mark_down(self, reason: str) -> None:
        """Known to be gone (the launcher saw the process exit): 503 now, not at the next probe."""
        self.replicas.mark_down(reason)

    def status(self) -> EngineStatus:
        replicas = self.replicas.replicas
        info = {"engine": "upstream", "replicas": [
            {"ready": r.ready, "in_flight": r.in_flight, **({"error": r.last_error} if not r.ready else {})}
            for r in replicas]}
        ready = [r for r in replicas if r.ready]
        if ready:
            models = list(dict.fromkeys(m for r in ready for m in r.models))
            return EngineStatus(True, "ready", models, info)
        return EngineStatus(False, "waiting for the upstream engine: " + replicas[0].last_error, [], info)

    # --- requests ---------------------------------------------------------------------
    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        # A non-streamed answer arrives whole: LMDEPLOY_TIMEOUT_S bounds it all.
        timeout = aiohttp.ClientTimeout(total=self._settings.lmdeploy_timeout_s,
                                        sock_connect=self._settings.upstream_connect_timeout_s)
        resp, replica = await self._open(request, timeout, first_byte_s=self._settings.lmdeploy_timeout_s)
        try:
            body = await _read(resp)
        finally:
            resp.release()
            replica.in_flight -= 1
        if resp.status != 200:
            raise upstream_error(resp.status, body, resp.headers)
        try:
            completion = json.loads(body)
        except ValueError:
            raise ServiceError(ErrorKind.UPSTREAM_ERROR, "The engine sent a response that is not JSON.") from None
        check_completion(completion)
        return completion

    async def open_stream(self, request: dict[str, Any]) -> EngineStream:
        settings = self._settings
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.upstream_connect_timeout_s,
                                        sock_read=settings.upstream_idle_timeout_s)
        deadline = time.monotonic() + settings.lmdeploy_timeout_s
        resp, replica = await self._open(request, timeout, first_byte_s=settings.upstream_first_byte_timeout_s)
        if resp.status != 200:
            try:
                body = await _read(resp)
            finally:
                resp.release()
                replica.in_flight -= 1
            raise upstream_error(resp.status, body, resp.headers)
        def report(usage: dict[str, Any]) -> None:
            stream.usage = usage

        stream = EngineStream(self._relay(resp, deadline, report), on_close=resp.close, on_abort=resp.close)
        stream.add_close_callback(lambda: setattr(replica, "in_flight", replica.in_flight - 1))
        return stream

    async def _open(self, request: dict[str, Any], timeout: aiohttp.ClientTimeout,
                    first_byte_s: float) -> tuple[aiohttp.ClientResponse, Replica]:
        """Send to the least busy replica; once more to another if it fails before answering."""
        tried: list[Replica] = []
        while True:
            replica = self.replicas.pick(exclude=tried)
            replica.in_flight += 1
            try:
                resp = await self._send(replica, request, timeout, first_byte_s)
            except ServiceError as exc:
                replica.in_flight -= 1
                if exc.kind is not ErrorKind.ENGINE_UNAVAILABLE:
                    raise  # a timeout may still be running there: never sent twice
                if tried or not self.replicas.others_ready(replica):
                    raise  # the last replica stays in: the probe, not one request, decides it is gone
                self.replicas.take_out(replica, exc.message)
                tried.append(replica)
                continue
            if resp.status >= 500 and not tried and self.replicas.others_ready(replica):
                resp.release()
                replica.in_flight -= 1
                self.replicas.take_out(replica, f"answered HTTP {resp.status}")
                tried.append(replica)
                continue
            return resp, replica

    async def _send(self, replica: Replica, request: dict[str, Any], timeout: aiohttp.ClientTimeout,
                    first_byte_s: float) -> aiohttp.ClientResponse:
        try:
            async with asyncio.timeout(first_byte_s):
                return await self._session.post(f"{replica.base_url}/v1/chat/completions", json=request,
                                                timeout=timeout)
        except TimeoutError:
            raise ServiceError(ErrorKind.UPSTREAM_TIMEOUT, f"The model engine did not start answering within "
                               f"{first_byte_s:g} s.") from None
        except aiohttp.ClientError as exc:
            raise _mapped(exc) from None

    async def _relay(self, resp: aiohttp.ClientResponse, deadline: float,
                     report_usage: Callable[[dict[str, Any]], None]) -> AsyncIterator[bytes]:
        finished = done_seen = False
        translator = StreamTranslator()
        try:
            async for chunk in resp.content.iter_any():
                out = translator.feed(chunk)
                if out:
                    done_seen = done_seen or b"[DONE]" in out
                    if b'"completion_tokens"' in out:  # the usage chunk: rare, so parsing it is cheap
                        usage_in(out, report_usage)
                    yield out
                if translator.failed:
                    return  # an error event ends the stream; closing drops the upstream request
                if time.monotonic() > deadline:
                    yield ServiceError(ErrorKind.UPSTREAM_TIMEOUT, "The answer took longer than "
                                       f"{self._settings.lmdeploy_timeout_s:g} s (LMDEPLOY_TIMEOUT_S).").sse_event()
                    return
            tail = translator.flush()
            if tail:
                yield tail
            finished = True
            if not (done_seen or b"[DONE]" in tail):  # cut short, or not SSE at all
                yield ServiceError(ErrorKind.UPSTREAM_ERROR, "The engine's stream ended before it was "
                                   "complete.").sse_event()
        except (aiohttp.ClientError, TimeoutError) as exc:
            yield _mapped(exc).sse_event()
        finally:
            if finished:
                resp.release()
            else:  # client gone or upstream broke: drop the connection so the engine aborts
                resp.close()


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    try:
        return await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _mapped(exc) from None


def _mapped(exc: BaseException) -> ServiceError:
    """Transport failures → 503 (can't connect), 504 (too slow), 502 (broke mid-way)."""
    # ClientOSError and ServerDisconnectedError before any answer: a pooled connection the
    # engine closed when it went away, or a reset. (Mid-stream breaks are handled in _relay.)
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
        log.warning("upstream unreachable: %s", exc)
        return ServiceError(ErrorKind.ENGINE_UNAVAILABLE, "The model engine is unreachable.",
                            headers={"Retry-After": "5"})
    if isinstance(exc, TimeoutError):
        return ServiceError(ErrorKind.UPSTREAM_TIMEOUT, "The model engine did not answer in time.")
    log.warning("upstream failed: %r", exc)
    return ServiceError(ErrorKind.UPSTREAM_ERROR, f"The model engine failed ({type(exc).__name__}).")


def _upstream_message(body: bytes) -> str:
    """The human message from OpenAI's nested, LMDeploy's flat or FastAPI's `detail` errors."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:500]
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if data.get("message"):
            return str(data["message"])
        detail = data.get("detail")
        if isinstance(detail, list):
            return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        if detail:
            return str(detail)
    return json.dumps(data)[:500]


_STATUS_KINDS = {
    400: ErrorKind.BAD_REQUEST, 404: ErrorKind.MODEL_NOT_FOUND, 413: ErrorKind.TOO_LARGE,
    415: ErrorKind.UNSUPPORTED_MEDIA, 422: ErrorKind.VALIDATION, 429: ErrorKind.OVERLOADED,
    503: ErrorKind.ENGINE_UNAVAILABLE, 504: ErrorKind.UPSTREAM_TIMEOUT,
}


def upstream_error(status: int, body: bytes, headers) -> ServiceError:
    """Map an upstream error response to ours, keeping client errors' statuses."""
    message = _upstream_message(body) or f"HTTP {status}"
    if status in (401, 403):  # the gateway's own credentials were refused: not the client's fault
        log.error("upstream refused the gateway's credentials (%d): %s", status, message)
        return ServiceError(ErrorKind.UPSTREAM_ERROR, "The model engine refused the gateway's credentials.")
    kind = _STATUS_KINDS.get(status)
    extra = {"Retry-After": headers["Retry-After"]} if status in (429, 503) and "Retry-After" in headers else None
    if kind is not None:
        return ServiceError(kind, message, headers=extra)
    if 400 <= status < 500:
        return ServiceError(ErrorKind.BAD_REQUEST, message, status=status)
    return ServiceError(ErrorKind.UPSTREAM_ERROR, f"The model engine failed (HTTP {status}): {message}")
