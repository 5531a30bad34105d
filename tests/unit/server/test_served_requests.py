"""The per-request metrics are plain numbers turned into Prometheus families when scraped;
what a scrape shows must be what prometheus_client's own metrics would have shown."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from vlserve.gateway.observation import Observation
from vlserve.server.request_metrics import LATENCY_BUCKETS, ServedRequests


def samples(registry: CollectorRegistry) -> set[str]:
    """The exposition's sample lines, less the creation times (they differ by a few µs)."""
    return {line for line in generate_latest(registry).decode().splitlines()
            if not line.startswith("#") and "_created" not in line}


def test_a_scrape_shows_what_prometheus_clients_metrics_would():
    durations = [0.0, 0.05, 0.050001, 1.0, 2.4999, 300.0, 301.0, 7.0]  # on, just over and past the bounds
    served = ServedRequests()
    ours = CollectorRegistry()
    ours.register(served)
    reference = CollectorRegistry()
    requests = Counter("vlserve_requests", "HTTP requests by route, status and key name (499: the client left "
                       "before the answer was over)", ["route", "status", "key"], registry=reference)
    latency = Histogram("vlserve_request_duration_seconds", "Time to the end of the response", ["route"],
                        buckets=LATENCY_BUCKETS, registry=reference)
    ttft = Histogram("vlserve_time_to_first_byte_seconds", "Time to the first byte of a streamed response "
                     "(first token)", ["route"], buckets=LATENCY_BUCKETS, registry=reference)
    tokens = Counter("vlserve_tokens", "Tokens in prompts and completions, by key name", ["kind", "key"],
                     registry=reference)
    for index, seconds in enumerate(durations):
        route, status, key = ("/v1/chat/completions", "/infer")[index % 2], (200, 429)[index % 3 == 0], "team-a"
        obs = Observation("id", prompt_tokens=index, completion_tokens=2 * index)
        served.observe(route, status, seconds, seconds / 2 if index % 2 else None, obs, key)
        requests.labels(route, str(status), key).inc()
        latency.labels(route).observe(seconds)
        if index % 2:
            ttft.labels(route).observe(seconds / 2)
        if index:
            tokens.labels("prompt", key).inc(index)
            tokens.labels("completion", key).inc(2 * index)
    theirs = samples(reference) | {"vlserve_requests_in_flight 0.0"}
    assert samples(ours) == theirs
    served.in_flight += 3
    assert "vlserve_requests_in_flight 3.0" in samples(ours)


def test_created_series_follow_prometheus_clients_setting(monkeypatch):
    served = ServedRequests()
    registry = CollectorRegistry()
    registry.register(served)
    served.observe("/v1/chat/completions", 200, 0.1, 0.05, Observation("id", prompt_tokens=3), "team-a")
    assert "_created" in generate_latest(registry).decode()
    monkeypatch.setenv("PROMETHEUS_DISABLE_CREATED_SERIES", "True")
    assert "_created" not in generate_latest(registry).decode()
