"""`vlserve bench`'s figures against a fake engine whose pacing is known.

The engine waits at least FIRST_S before its first text and GAP_S between chunks, so every
figure the load generator reports has a floor it can never be under, however busy the
machine; the counts are exact. No upper tolerances: how close to the pacing the figures
come on a quiet machine is the benchmark's business (bench/RESULTS.md: within 0.7% of wrk).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from tests.local_site import serve_app
from vlserve.tools.loadgen import BenchConfig, LoadGenerator, percentile

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
    assert sum(len(r.itl_s) for r in report.results) == 6 * (TOKENS - 1)
    answer_s = FIRST_S + GAP_S * (TOKENS - 1)
    for r in report.results:
        # TTFT is the first *text*: the empty role chunk arrives at once and must not count.
        assert r.ttft_s is not None and r.ttft_s >= FIRST_S
        assert r.latency_s >= answer_s and r.ttft_s + sum(r.itl_s) <= r.latency_s
    # The summary's figures are the results' (rounded to 0.01 ms for the report).
    assert summary["ttft_ms"]["p50"] == pytest.approx(percentile([r.ttft_s * 1000 for r in report.results], 50), abs=0.01)
    assert summary["latency_ms"]["p50"] == pytest.approx(percentile([r.latency_s * 1000 for r in report.results], 50),
                                                         abs=0.01)
    assert report.wall_s >= 3 * answer_s  # two at a time: three rounds
    assert summary["output_tokens_per_s"] == pytest.approx(6 * TOKENS / report.wall_s, abs=0.05)  # rounded to 0.1


async def test_a_request_rate_does_not_wait_for_answers():
    """The engine holds every answer until all 8 requests have arrived: a generator that
    waited for an answer before sending the next request would never finish."""
    arrived: list[float] = []
    all_in = asyncio.Event()

    async def held_chat(request: web.Request) -> web.Response:
        arrived.append(asyncio.get_running_loop().time())
        if len(arrived) == 8:
            all_in.set()
        await all_in.wait()
        return web.json_response({"choices": [{"index": 0, "message": {"content": "x"}}],
                                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    app = web.Application()
    app.add_routes([web.get("/v1/models", models), web.post("/v1/chat/completions", held_chat)])
    async with serve_app(app) as (_, url):
        config = BenchConfig(url=url, stream=False, rate=20, concurrency=16, requests=8, duration_s=None)
        report = await asyncio.wait_for(LoadGenerator(config).run(), timeout=60)
    starts = sorted(r.started for r in report.results)
    assert report.summary()["ok"] == 8 and report.summary()["ttft_ms"]["p50"] is None  # no stream, no TTFT
    # Never early: the i-th request starts no sooner than i intervals after the first.
    assert all(b - starts[0] >= i * 0.05 - 1e-3 for i, b in enumerate(starts))


async def test_errors_are_counted_by_kind(engine):
    summary = (await LoadGenerator(BenchConfig(url=engine, model="broken", concurrency=2, requests=4,
                                               duration_s=None)).run()).summary()
    assert summary["ok"] == 0 and summary["errors"] == {"HTTP 500": 4}


async def test_a_duration_and_a_warm_up(engine):
    generator = LoadGenerator(BenchConfig(url=engine, concurrency=2, duration_s=0.8, warmup_s=0.4))
    report = await generator.run()
    answer_s = FIRST_S + GAP_S * (TOKENS - 1)
    assert report.wall_s >= answer_s  # requests started before the end finish and are counted
    # Only requests started after the warm-up are counted, and none after the end.
    assert report.results and all(r.latency_s >= answer_s for r in report.results)
    first_counted = min(r.started for r in report.results)
    assert all(r.started - first_counted < 0.8 for r in report.results)


def test_percentiles():
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(map(float, range(101))), 99) == 99.0


def test_numbered_images_are_the_same_picture_in_different_bytes():
    import base64
    import io

    from PIL import Image

    from vlserve.tools.loadgen import NumberedImages, sample_image

    def decoded(url: str) -> tuple[bytes, bytes]:
        data = base64.b64decode(url.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as img:
            return data, img.tobytes()

    url = sample_image((96, 64))
    numbered = NumberedImages(url)
    (first, first_pixels), (second, second_pixels) = decoded(numbered.next()), decoded(numbered.next())
    assert first != second and first_pixels == second_pixels == decoded(url)[1]
    # A second generator (the measured run after its warm-up) sends none of the same bytes.
    again = NumberedImages(url)
    assert not {decoded(again.next())[0] for _ in range(50)} & {first, second}
