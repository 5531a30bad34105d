"""`vlserve bench`'s figures against a fake engine whose pacing is known.

The engine waits FIRST_S before its first chunk and GAP_S between chunks, so the load
generator must report TTFT ≈ FIRST_S and inter-token latency ≈ GAP_S (within a tolerance
for a busy 2-core machine), and count every token and every error.
"""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from aiohttp import web

from vlserve.tools.loadgen import BenchConfig, LoadGenerator, percentile

from ..local_site import serve_app

FIRST_S, GAP_S, TOKENS = 0.12, 0.03, 10


def chunk(delta: dict) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta}]}).encode() + b"\n\n"


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if body["model"] == "broken":
        return web.json_response({"error": {"message": "no"}}, status=500)
    usage = {"prompt_tokens": 5, "completion_tokens": TOKENS, "total_tokens": 5 + TOKENS}
    if not body.get("stream"):
        await asyncio.sleep(FIRST_S + GAP_S * (TOKENS - 1))
        return web.json_response({"choices": [{"index": 0, "message": {"content": "x" * TOKENS}}], "usage": usage})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(chunk({"role": "assistant", "content": ""}))  # no text: not the first token
    await asyncio.sleep(FIRST_S)
    for i in range(TOKENS):
        if i:
            await asyncio.sleep(GAP_S)
        await response.write(chunk({"content": f"t{i}"}))
    await response.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\ndata: [DONE]\n\n")
    return response


async def models(_: web.Request) -> web.Response:
    return web.json_response({"data": [{"id": "paced"}]})


@pytest.fixture
async def engine():
    app = web.Application()
    app.add_routes([web.get("/v1/models", models),
                    web.post("/v1/chat/completions", chat)])
    async with serve_app(app) as (_, url):
        yield url


async def test_streamed_figures_match_the_pacing(engine):
    report = await LoadGenerator(BenchConfig(url=engine, concurrency=2, requests=6, duration_s=None)).run()
    summary = report.summary()
    assert summary["model"] == "paced" and summary["ok"] == 6 and summary["errors"] == {}
    assert summary["output_tokens_per_request"] == TOKENS
    assert summary["ttft_ms"]["p50"] == pytest.approx(FIRST_S * 1000, abs=40)
    assert summary["itl_ms"]["p50"] == pytest.approx(GAP_S * 1000, abs=12)
    assert sum(len(r.itl_s) for r in report.results) == 6 * (TOKENS - 1)
    expected_latency = FIRST_S + GAP_S * (TOKENS - 1)
    assert summary["latency_ms"]["p50"] == pytest.approx(expected_latency * 1000, abs=60)
    # Two at a time, three rounds: about three answers' time in all.
    assert report.wall_s == pytest.approx(3 * expected_latency, rel=0.3)
    assert summary["output_tokens_per_s"] == pytest.approx(6 * TOKENS / report.wall_s, rel=0.01)


async def test_whole_answers_and_a_request_rate(engine):
    config = BenchConfig(url=engine, stream=False, rate=20, concurrency=16, requests=8, duration_s=None)
    report = await LoadGenerator(config).run()
    starts = sorted(r.started for r in report.results)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert percentile(gaps, 50) == pytest.approx(0.05, abs=0.02)  # on schedule, not waiting for answers
    assert report.summary()["ttft_ms"]["p50"] is None  # no stream, no first token
    assert report.summary()["latency_ms"]["p50"] == pytest.approx((FIRST_S + GAP_S * (TOKENS - 1)) * 1000, abs=60)


async def test_errors_are_counted_by_kind(engine):
    summary = (await LoadGenerator(BenchConfig(url=engine, model="broken", concurrency=2, requests=4,
                                               duration_s=None)).run()).summary()
    assert summary["ok"] == 0 and summary["errors"] == {"HTTP 500": 4}


async def test_a_duration_and_a_warm_up(engine):
    report = await LoadGenerator(BenchConfig(url=engine, concurrency=2, duration_s=0.8, warmup_s=0.4)).run()
    answer_s = FIRST_S + GAP_S * (TOKENS - 1)
    assert report.wall_s >= 0.8  # requests started before the end finish and are counted
    # Only those started after the warm-up: two at a time for 0.8 s, not 1.2 s.
    assert 2 * (0.8 / answer_s - 1) <= len(report.results) <= 2 * (0.8 / answer_s + 1)


def test_percentiles():
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(map(float, range(101))), 99) == 99.0
