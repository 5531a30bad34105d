"""Benchmark: what a repeated image costs the gateway, and the image cache's memory.

    python bench/image_cache.py [--turns 10] [--rss-minutes 10] [--write bench/RESULTS.md]

Two measurements, each against vlserve pinned to core 0 in front of a canned engine
(bench/fake_upstream.py) on core 1:

- A chat about one 12 MP photo (4000x3000 JPEG): each turn sends the whole conversation
  again, the photo included, as chat clients do. The gateway's CPU for each turn, with the
  image cache (the default) and without it (MEDIA_CACHE_BYTES=0), side by side with the
  floor (bench/asgi_floor.py's bare relay: what receiving, parsing and forwarding the same
  body costs a Python gateway that does nothing else).
- Memory under a stream of 1 MB photos that are all different (a numbered comment: no
  cache can serve them), 8 in flight for `--rss-minutes`: the gateway's resident memory
  once a minute, and the cache's bytes from /metrics, which must stay flat once it is full.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from gateway import cpu_seconds, wait_ready  # noqa: E402
from overhead import PHOTO, Engine, pin_load_generator, start  # noqa: E402
from servers import free_port  # noqa: E402

from vlserve.tools.loadgen import BenchConfig, LoadGenerator, sample_image  # noqa: E402

BIG_PHOTO = (4000, 3000)


def twelve_megapixels() -> str:
    """A photo-like 4000x3000 JPEG (noise over a gradient, as bench/media.py's), as a data URL."""
    return sample_image(BIG_PHOTO)


def vlserve(engine: Engine, **env: str):
    port = free_port()
    proc = start([sys.executable, "-m", "vlserve.cli", "serve"], core=0, env={
        "UPSTREAM_BASE_URL": engine.url, "PORT": str(port), "ACCESS_LOG": "false", "LOG_LEVEL": "warning",
        "MEDIA_ALLOW_PRIVATE_HOSTS": "", **env})
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/health")
    return url, proc


def floor_relay(engine: Engine):
    port = free_port()
    proc = start([sys.executable, "-m", "uvicorn", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                  "--log-level", "warning", "--port", str(port), "asgi_floor:relay"], core=0,
                 env={"UPSTREAM_BASE_URL": engine.url, "PYTHONPATH": str(ROOT / "bench")})
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/health")
    return url, proc


def chat_turns(engine: Engine, photo: str, turns: int, floor: bool = False, **env: str) -> list[float]:
    """The gateway's CPU ms for each turn of a chat that resends the photo every turn."""
    url, proc = floor_relay(engine) if floor else vlserve(engine, **env)
    messages: list[dict] = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": photo}},
                                                         {"type": "text", "text": "What is in this photo?"}]}]
    spent = []
    try:
        with httpx.Client(timeout=120) as client:
            client.post(f"{url}/v1/chat/completions", json={"model": "fake", "messages": [
                {"role": "user", "content": "warm up"}]}).raise_for_status()
            for turn in range(turns):
                before = cpu_seconds(proc.pid)
                resp = client.post(f"{url}/v1/chat/completions", json={"model": "fake", "messages": messages})
                resp.raise_for_status()
                spent.append((cpu_seconds(proc.pid) - before) * 1000)
                messages += [{"role": "assistant", "content": resp.json()["choices"][0]["message"]["content"]},
                             {"role": "user", "content": f"And what else? ({turn})"}]
    finally:
        proc.terminate()
        proc.wait()
    return spent


def rss_mb(pid: int) -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


def cache_bytes(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return float(re.search(r"^vlserve_image_cache_bytes (\S+)$", text, re.M).group(1))


def memory_under_new_photos(engine: Engine, minutes: float) -> list[tuple[float, float, float, int]]:
    """(minute, RSS MB, cache MB, requests answered so far), once a minute."""
    url, proc = vlserve(engine, MAX_CONCURRENT_REQUESTS="64")
    config = BenchConfig(url=url, model="fake", stream=False, concurrency=8, image_size=PHOTO,
                         distinct_images=True, duration_s=minutes * 60, max_tokens=16)
    generator = LoadGenerator(config)
    samples: list[tuple[float, float, float, int]] = []
    done = threading.Event()
    answered: list[int] = []

    def run() -> None:
        report = generator.run_sync()
        answered.append(report.summary()["ok"])
        done.set()

    threading.Thread(target=run, daemon=True).start()
    started = time.monotonic()
    try:
        while not done.wait(60):
            samples.append(((time.monotonic() - started) / 60, rss_mb(proc.pid), cache_bytes(url) / 2**20, 0))
        samples.append(((time.monotonic() - started) / 60, rss_mb(proc.pid), cache_bytes(url) / 2**20,
                        answered[0]))
    finally:
        proc.terminate()
        proc.wait()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--rss-minutes", type=float, default=10, help="0 leaves the memory run out")
    parser.add_argument("--write", help="append the results as Markdown to this file")
    args = parser.parse_args()
    pin_load_generator()
    engine = Engine(16, 0)
    try:
        photo = twelve_megapixels()
        cached = chat_turns(engine, photo, args.turns)
        uncached = chat_turns(engine, photo, args.turns, MEDIA_CACHE_BYTES="0")
        relayed = chat_turns(engine, photo, args.turns, floor=True)
        memory = memory_under_new_photos(engine, args.rss_minutes) if args.rss_minutes else []
    finally:
        engine.stop()
    text = report(args, len(photo) * 3 // 4, cached, uncached, relayed, memory)
    print(text)
    if args.write:
        with open(args.write, "a") as fh:
            fh.write(text)


def report(args, photo_bytes: int, cached: list[float], uncached: list[float], relayed: list[float],
           memory: list[tuple[float, float, float, int]]) -> str:
    def later(spent: list[float]) -> float:
        return sum(spent[1:]) / max(1, len(spent) - 1)

    turns = "\n".join(f"| {n + 1} | {a:.1f} | {b:.1f} | {c:.1f} |"
                      for n, (a, b, c) in enumerate(zip(cached, uncached, relayed, strict=True)))
    text = (f"\n## The image cache (`bench/image_cache.py`)\n\n"
            f"Command: `python bench/image_cache.py --turns {args.turns} --rss-minutes {args.rss_minutes:g}`  \n"
            f"Date: {datetime.date.today()}; machine: {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}; gateway pinned to core 0\n\n"
            f"A chat about one 12 MP photo ({photo_bytes / 1e6:.1f} MB JPEG), the conversation resent each turn: "
            "the gateway's CPU ms per turn\n\n| turn | cache on (default) | MEDIA_CACHE_BYTES=0 | floor: bare relay |\n"
            f"|---:|---:|---:|---:|\n{turns}\n\nTurns after the first: {later(cached):.1f} ms with the cache, "
            f"{later(uncached):.1f} ms without, {later(relayed):.1f} ms for the bare relay.\n")
    if memory:
        rows = "\n".join(f"| {minute:.1f} | {rss:.0f} | {cache:.0f} |" for minute, rss, cache, _ in memory)
        text += (f"\nA new 1 MB photo in every request, 8 in flight, {memory[-1][3]:,} requests in "
                 f"{memory[-1][0]:.1f} min:\n\n| minute | gateway RSS MB | image cache MB |\n|---:|---:|---:|\n"
                 f"{rows}\n")
    return text


if __name__ == "__main__":
    main()
