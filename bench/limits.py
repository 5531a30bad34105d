"""Benchmark: what keys' limits cost per request, and how exact they are across gateways.

    python bench/limits.py [--requests 1000] [--rounds 5] [--overshoot-s 65] [--write bench/RESULTS.md]

Part 1, cost. One canned engine (bench/fake_upstream.py) behind vlserve gateways measured
one after another in one run: the code before keys had limits (`--baseline-ref`, run from
a git worktree of that commit), no keys (limits off, usage still recorded), a key with
limits on the embedded store, and the same key with limits in Redis (a real
redis-server). The limits are set high enough never to refuse, so every request pays the
checks and nothing else changes. Gateway on core 0 alone, engine, Redis and load generator on core 1; CPU per
request from /proc (bench/overhead.py's method). Targets (issue 20): the embedded store
adds at most 5% to the cost before keys had limits, Redis at most 15%.

Part 2, exactness. Three gateways on one Redis, a key with 100 requests a minute, 48
clients asking in a loop (after a refusal each waits as Retry-After says, at most a
second) for `--overshoot-s` seconds. Reported: the most requests admitted in any
60-second span (counting only requests whose whole [sent, answered] lies in the span,
which an exact limiter keeps at or under the limit), beside the figures reported for
LiteLLM's proxy (issue 20: an RPM limit of 100 let 544 of 1,022 requests through).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from gateway import wait_ready  # noqa: E402
from overhead import Engine, load, pin_load_generator, start  # noqa: E402
from servers import free_port  # noqa: E402

KEY = "sk-bench-000000"
NEVER_REFUSED = f"""
[keys.bench]
key = "{KEY}"
requests_per_minute = 1000000000
tokens_per_minute = 1000000000000
max_concurrent = 100000
images_per_day = 1000000000
"""
EXACT = f"""
[keys.exact]  # a name of its own: the cost runs left the name "bench" a full window in Redis
key = "{KEY}"
requests_per_minute = 100
"""


def start_redis(workdir: str) -> tuple[str, subprocess.Popen]:
    port = free_port()
    proc = start(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir], core=1)
    deadline = time.monotonic() + 20
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.1)
    return f"redis://127.0.0.1:{port}/0", proc


def start_gateway(engine_url: str, env: dict[str, str], core: int | None = 0) -> tuple[str, subprocess.Popen]:
    port = free_port()
    proc = start([sys.executable, "-m", "vlserve.cli", "serve"], core=core, env={
        "UPSTREAM_BASE_URL": engine_url, "PORT": str(port), "ACCESS_LOG": "false", "LOG_LEVEL": "warning",
        "MAX_CONCURRENT_REQUESTS": "1024", "USAGE_FILE": "off", **env})
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/health")
    return url, proc


def baseline_worktree(ref: str, workdir: str) -> str:
    """The gateway's source at `ref`, checked out beside this one (its own src/ on PYTHONPATH)."""
    path = str(Path(workdir) / "baseline")
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", path, ref], check=True,
                   capture_output=True)
    return path


def cost(requests: int, rounds: int, workdir: str, redis_url: str, baseline: str | None) -> dict[str, float]:
    """Median CPU µs per request of each variant over `rounds` rounds, the variants taking
    turns within each round, in an order that rotates (so a machine that drifts drifts for
    all of them)."""
    keys = Path(workdir) / "never.toml"
    keys.write_text(NEVER_REFUSED)
    variants: dict[str, dict[str, str]] = {}
    if baseline:
        variants["before keys had limits"] = {"PYTHONPATH": str(Path(baseline) / "src")}
    variants |= {"limits off (no keys)": {},
                 "embedded store": {"API_KEYS_FILE": str(keys), "USAGE_FILE": str(Path(workdir) / "usage.sqlite3")},
                 "Redis": {"API_KEYS_FILE": str(keys), "REDIS_URL": redis_url}}
    engine = Engine(16, 0)
    running = {name: start_gateway(engine.url, env) for name, env in variants.items()}
    found: dict[str, list[float]] = {name: [] for name in variants}
    try:
        names = list(running)
        for round_ in range(rounds + 1):
            # Each round starts with the next variant: none is always first (or last) in line.
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                url, proc = running[name]
                config = {"stream": False, "concurrency": 16,
                          "api_key": KEY if "API_KEYS_FILE" in variants[name] else None}
                measured = load(url, proc, {**config, "requests": requests if round_ else 100})
                if round_:  # round 0 warms every gateway up
                    found[name].append(measured["cpu_us_per_request"])
    finally:
        for _, proc in running.values():
            proc.terminate()
            proc.wait()
        engine.stop()
    print("cost", found)
    return {name: statistics.median(values) for name, values in found.items()}


async def press(urls: list[str], clients: int, seconds: float) -> tuple[list[tuple[float, float]], int]:
    admitted: list[tuple[float, float]] = []
    refused = 0
    until = time.monotonic() + seconds
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}

    async def client(number: int, http: httpx.AsyncClient) -> None:
        nonlocal refused
        turn = number
        while time.monotonic() < until:
            turn += 1
            sent = time.monotonic()
            resp = await http.post(f"{urls[turn % len(urls)]}/v1/chat/completions", json=body,
                                   headers={"Authorization": f"Bearer {KEY}"})
            if resp.status_code == 200:
                admitted.append((sent, time.monotonic()))
                continue
            refused += 1
            await asyncio.sleep(min(float(resp.headers.get("retry-after-ms", 1000)) / 1000, 1.0))

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(n, http) for n in range(clients)))
    return admitted, refused


def most_in_any_minute(admitted: list[tuple[float, float]]) -> int:
    return max((sum(1 for s, r in admitted if s >= start and r < start + 60) for start, _ in admitted), default=0)


def overshoot(seconds: float, workdir: str, redis_url: str) -> dict[str, int]:
    keys = Path(workdir) / "exact.toml"
    keys.write_text(EXACT)
    engine = Engine(16, 0)
    gateways = [start_gateway(engine.url, {"API_KEYS_FILE": str(keys), "REDIS_URL": redis_url}, core=None)
                for _ in range(3)]
    try:
        admitted, refused = asyncio.run(press([url for url, _ in gateways], 48, seconds))
    finally:
        for _, proc in gateways:
            proc.terminate()
        engine.stop()
    found = {"requests": len(admitted) + refused, "admitted": len(admitted),
             "most_in_a_minute": most_in_any_minute(admitted)}
    print("overshoot", found)
    return found


def report(args, costs: dict[str, float], exact: dict[str, int]) -> str:
    off = costs.get("before keys had limits", costs["limits off (no keys)"])
    rows = "\n".join(f"| {name} | {us:,.0f} | {us / off:.3f}× |" for name, us in costs.items())
    return (f"\n## Keys' limits: cost and exactness (`bench/limits.py`)\n\n"
            f"Command: `python bench/limits.py --requests {args.requests} --rounds {args.rounds} "
            f"--overshoot-s {args.overshoot_s} "
            f"--baseline-ref {args.baseline_ref}`  \n"
            f"Date: {datetime.date.today()}; machine: {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}; gateway pinned to core 0; engine, Redis and client on core 1\n\n"
            "| small chat, 16 in flight | gateway CPU µs/request (median of rounds) | vs the first row |\n|---|---:|---:|\n"
            f"{rows}\n\n"
            "Targets against the code before keys had limits: embedded store ≤ 1.05×, Redis ≤ 1.15×.\n\n"
            f"Exactness: 3 gateways on one Redis, a key with 100 requests a minute, 48 clients for "
            f"{args.overshoot_s} s: {exact['requests']:,} requests, {exact['admitted']:,} admitted, at most "
            f"**{exact['most_in_a_minute']}** in any 60-second span (limit 100). Reported for LiteLLM's proxy "
            "with the same limit: 544 of 1,022 requests admitted; its token limit overshot 6.6× with 5 "
            "concurrent requests; limits multiplied by the number of replicas.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--overshoot-s", type=float, default=65)
    parser.add_argument("--baseline-ref", default="656bee7", help="the commit before keys had limits ('' to skip)")
    parser.add_argument("--write", help="append the results as Markdown to this file")
    args = parser.parse_args()
    pin_load_generator()
    with tempfile.TemporaryDirectory() as workdir:
        redis_url, redis_proc = start_redis(workdir)
        baseline = baseline_worktree(args.baseline_ref, workdir) if args.baseline_ref else None
        try:
            costs = cost(args.requests, args.rounds, workdir, redis_url, baseline)
            exact = overshoot(args.overshoot_s, workdir, redis_url)
        finally:
            redis_proc.terminate()
            if baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", baseline], check=False)
    text = report(args, costs, exact)
    print(text)
    if args.write:
        with open(args.write, "a") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
