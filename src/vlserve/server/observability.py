"""Metrics (Prometheus) and one structured log line per request, with request ids.

`Metrics` owns its own registry (no process globals: two apps in one process, as in
tests, don't collide). State that already lives elsewhere (queue depth, replica health)
is read when /metrics is scraped, not updated on the hot path.

`Observe` is pure ASGI middleware: it assigns or accepts `X-Request-ID`, echoes it,
counts and times every request, measures time to first byte of streams, and logs one
JSON line when the response is done. Routes add the model and token counts to the
request's `Observation` (request.state.observation); no prompt or image content is ever
logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vlserve.gateway.engine_call import Inference
from vlserve.gateway.observation import Observation
from vlserve.media import ImageCache, NormalizedImage
from vlserve.server.request_metrics import ServedRequests
from vlserve.tenancy.quota import Caller, Quota

CLIENT_CLOSED_REQUEST = 499  # nginx's convention; the client never sees it

access_log = logging.getLogger("vlserve.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
IMAGES_SHRUNK_HEADER = "X-VLServe-Images-Shrunk"  # the share of pixels images kept on a retry smaller


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.served = ServedRequests()
        r.register(self.served)
        self.image_bytes = Counter("vlserve_image_bytes", "Image bytes received from clients (in) and sent to "
                                   "engines (out)", ["direction"], registry=r)

    def watch(self, inference: Inference) -> None:
        """Gauges read from live state at scrape time (admission, engine, replicas)."""
        self.registry.register(_StateCollector(inference))

    def watch_quota(self, quota: Quota) -> None:
        self.registry.register(_QuotaCollector(quota))

    def watch_image_cache(self, cache: ImageCache) -> None:
        self.registry.register(_ImageCacheCollector(cache))

    def count_image(self, image: NormalizedImage) -> None:
        self.image_bytes.labels("in").inc(image.nbytes)
        self.image_bytes.labels("out").inc(image.sent_bytes)


class _StateCollector:
    def __init__(self, inference: Inference) -> None:
        self._inference = inference

    def describe(self) -> list:
        return []

    def collect(self):
        admission = self._inference.admission
        yield GaugeMetricFamily("vlserve_engine_requests_active", "Requests holding an admission place",
                                value=admission.active)
        yield GaugeMetricFamily("vlserve_queue_depth", "Requests waiting for an admission place",
                                value=admission.queued)
        status = self._inference.engine.status()
        yield GaugeMetricFamily("vlserve_engine_ready", "1 when the engine answers", value=int(status.ready))
        yield CounterMetricFamily("vlserve_retries_with_smaller_images", "Requests the engine could not fit, "
                                  "sent again with each image at a quarter of its pixels",
                                  value=self._inference.retried_smaller)
        up = GaugeMetricFamily("vlserve_upstream_up", "1 when the replica answers", labels=["replica"])
        load = GaugeMetricFamily("vlserve_upstream_in_flight", "Requests in flight per replica", labels=["replica"])
        for index, replica in enumerate(status.replicas):
            up.add_metric([str(index)], int(replica.ready))
            load.add_metric([str(index)], replica.in_flight)
        yield up
        yield load


class _ImageCacheCollector:
    def __init__(self, cache: ImageCache) -> None:
        self._cache = cache

    def describe(self) -> list:
        return []

    def collect(self):
        stats = self._cache.stats()
        lookups = CounterMetricFamily("vlserve_image_cache_lookups", "Images looked up in the cache of "
                                      "normalised images, by result", labels=["result"])
        lookups.add_metric(["hit"], stats.hits)
        lookups.add_metric(["miss"], stats.misses)
        yield lookups
        yield GaugeMetricFamily("vlserve_image_cache_bytes", "Bytes the image cache holds", value=stats.bytes)
        yield GaugeMetricFamily("vlserve_image_cache_entries", "Images the image cache holds", value=stats.entries)


class _QuotaCollector:
    def __init__(self, quota: Quota) -> None:
        self._quota = quota

    def describe(self) -> list:
        return []

    def collect(self):
        refusals = CounterMetricFamily("vlserve_limit_refusals", "Requests refused by a key's limits, by key "
                                       "name and limit", labels=["key", "limit"])
        for (key, limit), count in sorted(self._quota.refusals.items()):
            refusals.add_metric([key, limit], count)
        yield refusals
        if self._quota.shared is not None:
            yield GaugeMetricFamily("vlserve_limits_store_up", "1 while the shared store (Redis) answers; 0: "
                                    "limits fall back to each gateway, or refuse (LIMITS_ON_STORE_ERROR)",
                                    value=int(self._quota.store_up))
            yield CounterMetricFamily("vlserve_limits_store_errors", "Calls to the shared store that failed",
                                      value=self._quota.store_errors)


class Observe:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = _header(scope["headers"], b"x-request-id").decode("latin-1")
        obs = Observation(given if given and _REQUEST_ID.match(given) else os.urandom(16).hex())  # a uuid4's randomness
        scope.setdefault("state", {})["observation"] = obs
        header = (b"x-request-id", obs.request_id.encode())
        first_body, streaming = None, False

        async def observing_send(message: Message) -> None:
            nonlocal first_body, streaming
            if message["type"] == "http.response.start":
                obs.status, obs.started = message["status"], True
                headers = message.get("headers", [])
                streaming = _header(headers, b"content-type").startswith(b"text/event-stream")
                message = {**message, "headers": _headers(headers, header, obs)}
            elif message["type"] == "http.response.body" and first_body is None and message.get("body"):
                first_body = time.perf_counter()
            await send(message)

        served = self.metrics.served
        served.in_flight += 1
        try:
            await self.app(scope, receive, observing_send)
        finally:
            served.in_flight -= 1
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            ttft = first_body - started if streaming and first_body else None
            status = CLIENT_CLOSED_REQUEST if obs.client_left else obs.status
            caller = scope["state"].get("caller")
            served.observe(route, status, seconds, ttft, obs, caller.key.name if caller else "-")
            _log(scope, route, status, seconds, ttft, obs, caller)


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes:
    """The first value of the header `name` (lower case, as ASGI spells them), or b""."""
    for key, value in headers:
        if key == name:
            return value
    return b""


def _headers(given: list[tuple[bytes, bytes]], request_id: tuple[bytes, bytes],
             obs: Observation) -> list[tuple[bytes, bytes]]:
    """The response's headers with the request id, the images' shrink and what the layers
    below asked for (the key's x-ratelimit-*, unless the response set them itself)."""
    headers = [*given, request_id]
    if obs.images_shrunk is not None:
        headers.append((IMAGES_SHRUNK_HEADER.lower().encode(), str(obs.images_shrunk).encode()))
    if obs.more_headers is not None:
        names = {name for name, _ in given}
        headers += [header for header in obs.more_headers() if header[0] not in names]
    return headers


def configure_access_log(enabled: bool = True, log_level: str = "info") -> None:
    """Request lines go to stderr as bare JSON, one per line, whatever the app's log format.

    They are INFO lines: ACCESS_LOG=false or a LOG_LEVEL above info turns them off (and
    saves building them: `_log` checks first).
    """
    if not access_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.propagate = False
    level = max(logging.INFO, logging.getLevelName(log_level.upper()))
    access_log.setLevel(level if enabled else logging.CRITICAL + 1)


def _log(scope: Scope, route: str, status: int, seconds: float, ttft: float | None, obs: Observation,
         caller: Caller | None) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    line = {"event": "request", "request_id": obs.request_id, "method": scope["method"], "route": route,
            "status": status, "latency_ms": round(seconds * 1000, 1),
            "key": caller.key.name if caller else None, "user": caller.user if caller else None, "model": obs.model,
            "prompt_tokens": obs.prompt_tokens, "completion_tokens": obs.completion_tokens}
    if ttft is not None:
        line["ttft_ms"] = round(ttft * 1000, 1)
    if obs.images_shrunk is not None:
        line["images_shrunk"] = obs.images_shrunk
    line.update(obs.extra)
    access_log.info(json.dumps(line))
