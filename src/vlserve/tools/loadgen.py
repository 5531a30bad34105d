"""`vlserve bench`: a load generator for any OpenAI-compatible chat endpoint.

It sends chat completions (streamed or not, text only or with a generated JPEG of a
chosen size) at a fixed concurrency (closed loop: each worker sends its next request
when the last one ends) or at a fixed request rate (open loop: requests start on a
schedule whatever the answers' speed, up to a cap in flight), for a duration or a count,
after a warm-up whose requests are not counted. Per request it records:

- TTFT: from sending to the first chunk that carries text (content, reasoning or a tool
  call), for streams;
- ITL: the gaps between successive text-carrying chunks of a stream;
- end-to-end latency, output tokens (the answer's `usage`, else the chunks counted);

and reports p50/p90/p99 of each, requests/s, output tokens/s and errors by kind. The
client is aiohttp with one pooled session, so what it measures is the server's.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from vlserve.sse import EventSplitter, payload_of


@dataclass
class BenchConfig:
    url: str                            # the server's base URL (…/v1 is added)
    model: str | None = None            # None: the first of GET /v1/models
    api_key: str | None = None
    stream: bool = True
    prompt: str = "Describe this picture in detail."
    max_tokens: int = 128
    image_size: tuple[int, int] | None = None  # a generated JPEG of this size in each request
    distinct_images: bool = False       # each request's JPEG differs in its bytes: no cache can serve it
    concurrency: int = 8
    rate: float | None = None           # requests per second (open loop); None: closed loop
    duration_s: float | None = 30.0     # measure for this long…
    requests: int | None = None         # …or this many requests (whichever is given)
    warmup_s: float = 0.0               # requests started in the first seconds are not counted
    timeout_s: float = 600.0
    extra: dict[str, Any] = field(default_factory=dict)  # more body fields (temperature, ignore_eos, …)


@dataclass
class RequestResult:
    started: float
    ok: bool
    latency_s: float
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    error: str | None = None


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class BenchReport:
    config: BenchConfig
    model: str
    results: list[RequestResult]
    wall_s: float

    def summary(self) -> dict[str, Any]:
        ok = [r for r in self.results if r.ok]
        tokens = sum(r.output_tokens for r in ok)
        errors = Counter(r.error or "error" for r in self.results if not r.ok)

        def dist(values: list[float]) -> dict[str, float | None]:
            return {f"p{q}": _ms(percentile(values, q)) for q in (50, 90, 99)} | {"mean": _ms(_mean(values))}

        return {
            "model": self.model, "stream": self.config.stream, "concurrency": self.config.concurrency,
            "rate": self.config.rate, "image_size": list(self.config.image_size) if self.config.image_size else None,
            "max_tokens": self.config.max_tokens, "duration_s": round(self.wall_s, 3),
            "requests": len(self.results), "ok": len(ok), "errors": dict(errors),
            "requests_per_s": round(len(ok) / self.wall_s, 3) if self.wall_s else None,
            "output_tokens_per_s": round(tokens / self.wall_s, 1) if self.wall_s else None,
            "output_tokens_per_request": round(tokens / len(ok), 1) if ok else None,
            "ttft_ms": dist([r.ttft_s for r in ok if r.ttft_s is not None]),
            "itl_ms": dist([gap for r in ok for gap in r.itl_s]),
            "latency_ms": dist([r.latency_s for r in ok]),
        }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


@functools.lru_cache(maxsize=4)
def sample_image(size: tuple[int, int]) -> str:
    """A photo-like JPEG data URL (a gradient with noise, so it compresses like a photo).
    The same bytes for a size throughout a process: a warm-up and the runs measured after it
    send the same photo (the noise is random)."""
    from PIL import Image

    gradient = Image.linear_gradient("L").resize(size)
    noise = Image.effect_noise(size, 40)
    image = Image.merge("RGB", (gradient, noise, Image.blend(gradient, noise, 0.5)))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class NumberedImages:
    """One JPEG data URL, a new number in a comment segment each time: the same picture,
    different bytes. The comment is 18 bytes with the start-of-image marker, a multiple of
    3, so its base64 joins the rest's (encoded once) without re-encoding the photo. The
    numbers start at random, so two runs (a warm-up and its measure, or two load
    generators) do not send a gateway the same bytes."""

    def __init__(self, data_url: str) -> None:
        head, encoded = data_url.split(",", 1)
        rest = base64.b64decode(encoded)[2:]  # after the start-of-image marker
        self._head = head + ","
        self._rest = base64.b64encode(rest).decode("ascii")
        self._count = random.randrange(10**11)  # and 10**12 - 1 is the most the comment holds

    def next(self) -> str:
        self._count += 1
        comment = b"\xff\xd8\xff\xfe\x00\x0e" + b"%012d" % self._count
        return self._head + base64.b64encode(comment).decode("ascii") + self._rest


class LoadGenerator:
    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self._headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._base = config.url.rstrip("/") + "/v1"
        self._body: dict[str, Any] = {}
        self._numbered: NumberedImages | None = None

    def run_sync(self) -> BenchReport:
        return asyncio.run(self.run())

    async def run(self) -> BenchReport:
        config = self.config
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=config.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self._headers) as session:
            model = config.model or await self._first_model(session)
            self._body = self._request_body(model)
            if config.image_size and config.distinct_images:
                self._numbered = NumberedImages(self._body["messages"][0]["content"][0]["image_url"]["url"])
            started = time.monotonic()
            results = await (self._open_loop(session, started) if config.rate else self._closed_loop(session, started))
            measured = [r for r in results if r.started >= started + config.warmup_s]
            ended = max((r.started + r.latency_s for r in measured), default=time.monotonic())
        return BenchReport(config, model, measured, max(0.0, ended - (started + config.warmup_s)))

    async def _first_model(self, session: aiohttp.ClientSession) -> str:
        async with session.get(f"{self._base}/models") as resp:
            resp.raise_for_status()
            return (await resp.json())["data"][0]["id"]

    def _request_body(self, model: str) -> dict[str, Any]:
        config = self.config
        content: Any = config.prompt
        if config.image_size:
            content = [{"type": "image_url", "image_url": {"url": sample_image(config.image_size)}},
                       {"type": "text", "text": config.prompt}]
        body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": config.max_tokens,
                "stream": config.stream, **config.extra}
        if config.stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def _more(self, started: float, sent: int) -> bool:
        config = self.config
        if config.requests is not None:
            return sent < config.requests
        return time.monotonic() < started + config.warmup_s + (config.duration_s or 0)

    async def _closed_loop(self, session: aiohttp.ClientSession, started: float) -> list[RequestResult]:
        results: list[RequestResult] = []
        sent = 0

        async def worker() -> None:
            nonlocal sent
            while self._more(started, sent):
                sent += 1
                results.append(await self._one(session))

        await asyncio.gather(*(worker() for _ in range(self.config.concurrency)))
        return results

    async def _open_loop(self, session: aiohttp.ClientSession, started: float) -> list[RequestResult]:
        assert self.config.rate
        interval = 1 / self.config.rate
        in_flight = asyncio.Semaphore(self.config.concurrency)
        tasks: list[asyncio.Task[RequestResult]] = []

        async def bounded() -> RequestResult:
            async with in_flight:
                return await self._one(session)

        while self._more(started, len(tasks)):
            tasks.append(asyncio.create_task(bounded()))
            await asyncio.sleep(max(0.0, started + len(tasks) * interval - time.monotonic()))
        return list(await asyncio.gather(*tasks))

    async def _one(self, session: aiohttp.ClientSession) -> RequestResult:
        started = time.monotonic()
        try:
            async with session.post(f"{self._base}/chat/completions", json=self._next_body()) as resp:
                if resp.status != 200:
                    await resp.read()
                    return RequestResult(started, False, time.monotonic() - started, error=f"HTTP {resp.status}")
                if not self.config.stream:
                    answer = await resp.json()
                    tokens = (answer.get("usage") or {}).get("completion_tokens", 0)
                    return RequestResult(started, True, time.monotonic() - started, output_tokens=tokens)
                return await self._read_stream(resp, started)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return RequestResult(started, False, time.monotonic() - started, error=type(exc).__name__)

    def _next_body(self) -> dict[str, Any]:
        if self._numbered is None:
            return self._body
        image = {"type": "image_url", "image_url": {"url": self._numbered.next()}}
        message = {"role": "user", "content": [image, *self._body["messages"][0]["content"][1:]]}
        return {**self._body, "messages": [message]}

    async def _read_stream(self, resp: aiohttp.ClientResponse, started: float) -> RequestResult:
        result = RequestResult(started, True, 0.0)
        last: float | None = None
        chunks = usage_tokens = 0
        splitter = EventSplitter()
        async for data in resp.content.iter_any():
            now = time.monotonic()
            for event in splitter.feed(data):
                payload = payload_of(event)
                if not isinstance(payload, dict):
                    continue
                if "error" in payload:
                    result.ok, result.error = False, "error event"
                if payload.get("usage"):
                    usage_tokens = payload["usage"].get("completion_tokens", 0)
                if any(_has_text(choice.get("delta") or {}) for choice in payload.get("choices") or []):
                    chunks += 1
                    if last is None:
                        result.ttft_s = now - started
                    else:
                        result.itl_s.append(now - last)
                    last = now
        result.latency_s = time.monotonic() - started
        result.output_tokens = usage_tokens or chunks
        return result


def _has_text(delta: dict[str, Any]) -> bool:
    return bool(delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
                or delta.get("tool_calls"))


def run(config: BenchConfig) -> BenchReport:
    return LoadGenerator(config).run_sync()
