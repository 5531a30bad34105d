"""UpstreamEngine: forwards chat completions to OpenAI-compatible servers (LMDeploy, vLLM, ...).

One pooled aiohttp session for the life of the app. Streams are relayed as the raw bytes
the upstream sends, chunk by chunk as they arrive, after its status has been checked; a
stream closed early (client gone) closes the upstream connection, which is how LMDeploy
and vLLM learn to abort the generation.

Until an upstream answers `GET /v1/models`, the engine is not ready (health is 503) and
a background probe keeps trying, so the gateway may start before its engine.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..config import Settings
from ..errors import ErrorKind, ServiceError
from .base import EngineStatus, EngineStream
from .lmdeploy_compat import StreamTranslator, check_completion

log = logging.getLogger("vlserve.upstream")

PROBE_INTERVAL_LOADING_S = 1.0
PROBE_INTERVAL_READY_S = 10.0


@dataclass
class Replica:
    base_url: str
    ready: bool = False
    models: list[str] = field(default_factory=list)
    last_error: str = "not probed yet"


class UpstreamEngine:
    kind = "upstream"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._replicas = [Replica(url) for url in settings.lmdeploy_base_url]
        self._rotation = itertools.cycle(range(len(self._replicas)))
        self._session: aiohttp.ClientSession | None = None
        self._probe_task: asyncio.Task | None = None
        self._ready_event = asyncio.Event()

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._settings.upstream_max_connections,
                                         keepalive_timeout=30, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                              timeout=aiohttp.ClientTimeout(total=None))
        self._probe_task = asyncio.create_task(self._probe_forever())

    async def close(self) -> None:
        if self._probe_task:
            self._probe_task.cancel()
        if self._session:
            await self._session.close()

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready_event.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def mark_down(self, reason: str) -> None:
        """Known to be gone (the launcher saw the process exit): 503 now, not at the next probe."""
        for replica in self._replicas:
            replica.ready, replica.last_error = False, reason
        self._ready_event.clear()

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._probe(replica) for replica in self._replicas))
            if any(r.ready for r in self._replicas):
                self._ready_event.set()
            all_ready = all(r.ready for r in self._replicas)
            await asyncio.sleep(PROBE_INTERVAL_READY_S if all_ready else PROBE_INTERVAL_LOADING_S)

    async def _probe(self, replica: Replica) -> None:
        timeout = aiohttp.ClientTimeout(total=self._settings.upstream_connect_timeout_s)
        try:
            async with self._session.get(f"{replica.base_url}/v1/models", timeout=timeout) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                models = [m["id"] for m in body.get("data", []) if isinstance(m, dict) and m.get("id")]
                if not models:
                    raise ValueError("no models listed")
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, AttributeError) as exc:
            if replica.ready:
                log.warning("upstream %s stopped answering: %s", replica.base_url, exc)
            replica.ready, replica.last_error = False, f"{type(exc).__name__}: {exc}".rstrip(": ")
            return
        if not replica.ready:
            log.info("upstream %s ready, models %s", replica.base_url, models)
        replica.ready, replica.models, replica.last_error = True, models, ""

    def status(self) -> EngineStatus:
        ready = [r for r in self._replicas if r.ready]
        info = {"engine": "upstream", "replicas": [
            {"ready": r.ready, **({"error": r.last_error} if not r.ready else {})} for r in self._replicas]}
        if ready:
            models = list(dict.fromkeys(m for r in ready for m in r.models))
            return EngineStatus(True, "ready", models, info)
        return EngineStatus(False, "waiting for the upstream engine: " + self._replicas[0].last_error, [], info)

    def _pick(self) -> Replica:
        for _ in range(len(self._replicas)):
            replica = self._replicas[next(self._rotation)]
            if replica.ready:
                return replica
        raise ServiceError(ErrorKind.ENGINE_UNAVAILABLE, "The model engine is not available yet; retry shortly.",
                           headers={"Retry-After": "5"})

    # --- requests ---------------------------------------------------------------------
    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=self._settings.lmdeploy_timeout_s,
                                        sock_connect=self._settings.upstream_connect_timeout_s)
        async with self._post(request, timeout) as resp:
            body = await _read(resp)
            if resp.status != 200:
                raise upstream_error(resp.status, body, resp.headers)
        try:
            completion = json.loads(body)
        except ValueError:
            raise ServiceError(ErrorKind.UPSTREAM_ERROR, "The engine sent a response that is not JSON.") from None
        check_completion(completion)
        return completion

    async def open_stream(self, request: dict[str, Any]) -> EngineStream:
        # Streams have no total deadline; LMDEPLOY_TIMEOUT_S bounds each silent gap instead.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._settings.upstream_connect_timeout_s,
                                        sock_read=self._settings.lmdeploy_timeout_s)
        context = self._post(request, timeout)
        resp = await context.__aenter__()
        if resp.status != 200:
            try:
                body = await _read(resp)
            finally:
                await context.__aexit__(None, None, None)
            raise upstream_error(resp.status, body, resp.headers)
        return EngineStream(self._relay(resp), on_close=resp.close)

    async def _relay(self, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        finished = False
        translator = StreamTranslator()
        try:
            async for chunk in resp.content.iter_any():
                out = translator.feed(chunk)
                if out:
                    yield out
                if translator.failed:
                    return  # an error event ends the stream; closing drops the upstream request
            tail = translator.flush()
            if tail:
                yield tail
            finished = True
        except (aiohttp.ClientError, TimeoutError) as exc:
            yield _mapped(exc).sse_event()
        finally:
            if finished:
                resp.release()
            else:  # client gone or upstream broke: drop the connection so the engine aborts
                resp.close()

    def _post(self, request: dict[str, Any], timeout: aiohttp.ClientTimeout):
        replica = self._pick()
        return _Guarded(self._session.post(f"{replica.base_url}/v1/chat/completions", json=request,
                                           timeout=timeout))


class _Guarded:
    """Wraps an aiohttp request context so transport failures become ServiceErrors."""

    def __init__(self, context) -> None:
        self._context = context

    async def __aenter__(self) -> aiohttp.ClientResponse:
        try:
            return await self._context.__aenter__()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _mapped(exc) from None

    async def __aexit__(self, *exc: object) -> None:
        await self._context.__aexit__(*exc)


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    try:
        return await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _mapped(exc) from None


def _mapped(exc: BaseException) -> ServiceError:
    """Transport failures → 503 (can't connect), 504 (too slow), 502 (broke mid-way)."""
    # ClientOSError covers a pooled connection the engine closed when it went away.
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ClientOSError)):
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
