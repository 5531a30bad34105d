"""The per-request metrics: requests by route, status and key, latency and time to first
byte per route, tokens by key, requests in flight.

They change on every request, so they are counted as plain numbers and made into
Prometheus families only when scraped: prometheus_client's own metrics take a lock and
make several calls for every update (~2% of a small request). A scrape shows what
prometheus_client's Counter, Histogram and Gauge would (names, labels, buckets, the
`_created` series, left out as theirs are under PROMETHEUS_DISABLE_CREATED_SERIES=true).
Updated from the event loop only, where /metrics is served too.
"""

from __future__ import annotations

import bisect
import itertools
import os
import time
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from vlserve.gateway.observation import Observation

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def _with_created() -> bool:
    """Whether to show `_created` series: prometheus_client's own setting, read as it reads it."""
    return os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() != "true"


class _Histogram:
    """One route's histogram in prometheus_client's terms, as plain numbers."""

    __slots__ = ("counts", "created", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket, the last one +Inf; summed when read
        self.total = 0.0
        self.created = time.time()

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # a bucket's bound is inclusive
        self.total += seconds

    def buckets(self) -> list[tuple[str, int]]:
        bounds = [*map(floatToGoString, LATENCY_BUCKETS), "+Inf"]
        return list(zip(bounds, itertools.accumulate(self.counts), strict=True))


class ServedRequests:
    """The per-request metrics, as a collector of the app's registry."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._requests: dict[tuple[str, str, str], list[float]] = {}  # route, status, key -> [count, created]
        self._latency: dict[str, _Histogram] = {}
        self._ttft: dict[str, _Histogram] = {}
        self._tokens: dict[tuple[str, str], list[float]] = {}  # kind, key -> [tokens, created]

    def observe(self, route: str, status: int, seconds: float, ttft: float | None, obs: Observation,
                key: str) -> None:
        _add(self._requests, (route, str(status), key), 1)
        _histogram(self._latency, route).observe(seconds)
        if ttft is not None:
            _histogram(self._ttft, route).observe(ttft)
        if obs.prompt_tokens:
            _add(self._tokens, ("prompt", key), obs.prompt_tokens)
        if obs.completion_tokens:
            _add(self._tokens, ("completion", key), obs.completion_tokens)

    def describe(self) -> list:
        return []

    def collect(self):
        yield _counters("vlserve_requests", "HTTP requests by route, status and key name (499: the client left "
                        "before the answer was over)", ["route", "status", "key"], self._requests)
        yield _histograms("vlserve_request_duration_seconds", "Time to the end of the response", self._latency)
        yield _histograms("vlserve_time_to_first_byte_seconds", "Time to the first byte of a streamed response "
                          "(first token)", self._ttft)
        yield _counters("vlserve_tokens", "Tokens in prompts and completions, by key name", ["kind", "key"],
                        self._tokens)
        yield GaugeMetricFamily("vlserve_requests_in_flight", "HTTP requests being served", value=self.in_flight)


def _counters(name: str, documentation: str, labels: list[str],
              counts: dict[Any, list[float]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    with_created = _with_created()
    for values, (count, created) in list(counts.items()):
        family.add_metric(values, count, created=created if with_created else None)
    return family


def _add(counts: dict[Any, list[float]], labels: Any, amount: int) -> None:
    entry = counts.get(labels)
    if entry is None:
        counts[labels] = [amount, time.time()]
    else:
        entry[0] += amount


def _histogram(histograms: dict[str, _Histogram], route: str) -> _Histogram:
    histogram = histograms.get(route)
    if histogram is None:
        histogram = histograms[route] = _Histogram()
    return histogram


def _histograms(name: str, documentation: str, histograms: dict[str, _Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["route"])
    for route, histogram in list(histograms.items()):
        family.add_metric([route], histogram.buckets(), histogram.total)
        if _with_created():  # as Histogram's
            family.samples.append(Sample(name + "_created", {"route": route}, histogram.created))
    return family
