"""Benchmark: what the gateway itself costs, side by side with the origin design's adapter.

    python bench/overhead.py [--requests 400] [--write bench/RESULTS.md]

One canned engine (bench/fake_upstream.py) is called three ways in one run: directly,
through vlserve, and through the naive adapter (bench/naive_adapter.py: FastAPI +
`requests`, as the origin design had it). The gateway under test runs alone on core 0
(`taskset`), the engine and the load generator (vlserve's own, `vlserve bench`) on the
other core. A gateway's cost is its process's CPU seconds (from /proc) divided by the
requests, or the chunks, it relayed. Each load runs in three rounds, the gateways taking
turns within each, so that a slow spell of the machine (runs of the same code here spread
±15%) weighs on every gateway alike. The loads:

- small chat answers, not streamed, 16 in flight;
- streams whose chunks come 25 ms apart, as an engine's tokens do (one event per read),
  64 in flight: CPU per chunk, throughput and time to first token against direct. The
  streams are all the same length, so the 64 start and end together, in waves, and the
  p50 is a request in the middle of a wave of 64 arriving at once; `stream-spread` sends
  the same streams 64 a second, evenly spaced (~64 in flight, not in step), for the time
  to first token that clients arriving independently see;
- one 1 MB photo (1523x1142 JPEG) per request, 8 in flight, the same photo every time
  (`image`: after the first, vlserve's image cache serves it) and a different one every
  time (`image-new`: the same picture with a numbered comment, so no cache can serve it and
  vlserve validates and prepares every one); the adapter forwards the string.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from gateway import cpu_seconds, wait_ready  # noqa: E402
from servers import free_port  # noqa: E402

from vlserve.tools.loadgen import BenchConfig, BenchReport, LoadGenerator, sample_image  # noqa: E402


def start(args: list[str], env: dict[str, str] | None = None, core: int | None = None) -> subprocess.Popen:
    """`args` started on `core`, or on any core (None), not on the pinned load generator's alone."""
    cores = os.cpu_count() or 1
    pin = ["taskset", "-c", str(core) if core is not None else f"0-{cores - 1}"] if cores > 1 else []
    return subprocess.Popen([*pin, *args], env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def pin_load_generator() -> None:
    """Keep this process, the load generator, on core 1 with the engine, so the gateway has
    core 0 to itself. Unpinned, the scheduler often put it on the gateway's core, and the
    same gateway's CPU per request moved by ±20% from one run to the next."""
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})


class Engine:
    """A canned engine on core 1: `chunks` pieces, `delay_ms` apart."""

    def __init__(self, chunks: int, delay_ms: float) -> None:
        self.port = free_port()
        self.proc = start([sys.executable, str(ROOT / "bench" / "fake_upstream.py"), "--port", str(self.port),
                           "--chunks", str(chunks), "--delay-ms", str(delay_ms)], core=1)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_ready(f"{self.url}/v1/models")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def gateways(engine: Engine) -> dict[str, tuple[str, subprocess.Popen]]:
    vl_port, naive_port = free_port(), free_port()
    vlserve = start([sys.executable, "-m", "vlserve.cli", "serve"], core=0, env={
        "UPSTREAM_BASE_URL": engine.url, "PORT": str(vl_port), "ACCESS_LOG": "false", "LOG_LEVEL": "warning",
        "MAX_CONCURRENT_REQUESTS": "1024", "MEDIA_ALLOW_PRIVATE_HOSTS": ""})
    naive = start([sys.executable, str(ROOT / "bench" / "naive_adapter.py"), "--port", str(naive_port),
                   "--upstream", engine.url], core=0)
    found = {"vlserve": (f"http://127.0.0.1:{vl_port}", vlserve), "naive adapter": (f"http://127.0.0.1:{naive_port}",
                                                                                   naive)}
    wait_ready(f"{found['vlserve'][0]}/health")
    wait_ready(f"{found['naive adapter'][0]}/v1/models")
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (granian serves from a child process)."""
    total = cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += sum(tree_cpu_seconds(int(child)) for child in (task / "children").read_text().split())
    return total


def load(url: str, proc: subprocess.Popen | None, config: dict) -> dict:
    """Run one load against `url`; the gateway process's CPU per request and per chunk."""
    return figures(*measured(url, proc, config))


def measured(url: str, proc: subprocess.Popen | None, config: dict) -> tuple[float, BenchReport]:
    """One load against `url`: the gateway's CPU seconds for it, and the load's report."""
    before = tree_cpu_seconds(proc.pid) if proc else 0.0
    report = LoadGenerator(BenchConfig(url=url, model="fake", duration_s=None, **config)).run_sync()
    used = tree_cpu_seconds(proc.pid) - before if proc else 0.0
    if any(not result.ok for result in report.results):
        raise RuntimeError(f"{url}: {report.summary()['errors']}")
    return used, report


def figures(used: float, report: BenchReport) -> dict:
    summary = report.summary()
    chunks = sum(r.output_tokens for r in report.results if r.ok)
    return {"summary": summary, "cpu_us_per_request": used / max(1, summary["ok"]) * 1e6,
            "cpu_us_per_chunk": used / max(1, chunks) * 1e6, "chunks_per_s": chunks / report.wall_s}


ROUNDS = 3


def run_load(name: str, engine_args: tuple[int, float], config: dict, warmup: dict,
             start_gateways=None, rounds: int = ROUNDS) -> dict[str, dict]:
    """Each gateway's load in `rounds` parts taken in turn (direct, vlserve, ..., then again),
    so a slow spell of this shared machine falls on every gateway alike, not on one."""
    engine = Engine(*engine_args)
    found = (start_gateways or gateways)(engine)
    targets: dict[str, tuple[str, subprocess.Popen | None]] = {"direct": (engine.url, None), **found}
    parts: dict[str, list[tuple[float, BenchReport]]] = {gateway: [] for gateway in targets}
    try:
        for url, proc in found.values():
            load(url, proc, warmup)
        part = {**config, "requests": max(1, config["requests"] // rounds)}
        for _ in range(rounds):
            for gateway, (url, proc) in targets.items():
                parts[gateway].append(measured(url, proc, part))
    finally:
        for _, proc in found.values():
            proc.terminate()
        engine.stop()
    results = {gateway: figures(sum(used for used, _ in runs), joined([report for _, report in runs]))
               for gateway, runs in parts.items()}
    print(name, {k: {m: round(v, 1) for m, v in r.items() if m != "summary"} for k, r in results.items()})
    return results


def joined(reports: list[BenchReport]) -> BenchReport:
    """The rounds of one gateway's load as one report (their requests, their time)."""
    return BenchReport(reports[0].config, reports[0].model, [r for report in reports for r in report.results],
                       sum(report.wall_s for report in reports))


def loads(requests: int) -> dict[str, tuple[tuple[int, float], dict, dict]]:
    """Each load: the engine's (chunks, ms apart), the measured run, its warm-up."""
    image = {"stream": False, "concurrency": 8, "requests": max(16, requests // 10), "image_size": PHOTO}
    new_image = {**image, "distinct_images": True}
    return {
        "small": ((16, 0), {"stream": False, "concurrency": 16, "requests": requests},
                  {"stream": False, "concurrency": 16, "requests": 50}),
        "stream": ((40, 25), {"stream": True, "concurrency": 64, "requests": requests // 2},
                   {"stream": True, "concurrency": 64, "requests": 64}),
        # The same streams arriving 1/64 s apart: ~64 in flight, not in step (see TTFT above).
        "stream-spread": ((40, 25), {"stream": True, "concurrency": 256, "rate": 64.0, "requests": requests // 2},
                          {"stream": True, "concurrency": 64, "requests": 64}),
        "image": ((16, 0), image, {**image, "requests": 8}),
        "image-new": ((16, 0), new_image, {**new_image, "requests": 8}),
    }


PHOTO = (1523, 1142)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="small requests per gateway (streams: /2)")
    parser.add_argument("--only", choices=["small", "stream", "stream-spread", "image", "image-new"], action="append",
                        help="run only this load (repeatable); the report leaves the others out")
    parser.add_argument("--write", help="append the results as Markdown to this file")
    args = parser.parse_args()
    pin_load_generator()
    chosen = {name: spec for name, spec in loads(args.requests).items() if not args.only or name in args.only}
    results = {name: run_load(name, *spec) for name, spec in chosen.items()}
    text = report(args, results, len(sample_image(PHOTO)) * 3 // 4)
    print(text)
    if args.write:
        with open(args.write, "a") as fh:
            fh.write(text)


def added_ttft(result: dict, direct: dict) -> str:
    return f"{result['summary']['ttft_ms']['p50'] - direct['summary']['ttft_ms']['p50']:+.1f}"


def report(args, results: dict[str, dict[str, dict]], photo_bytes: int) -> str:
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}×" if b else "–"

    def cell(load: str, gateway: str, fmt) -> str:
        return fmt(results[load][gateway], results[load]["direct"]) if load in results else "–"

    columns = [
        ("small chat, 16 in flight: CPU µs/request", "small", lambda r, d: f"{r['cpu_us_per_request']:,.0f}"),
        ("stream, 25 ms/chunk, 64 in flight: CPU µs/chunk", "stream", lambda r, d: f"{r['cpu_us_per_chunk']:,.1f}"),
        ("stream throughput vs direct", "stream", lambda r, d: ratio(r["chunks_per_s"], d["chunks_per_s"])),
        ("added TTFT p50 ms", "stream", added_ttft),
        ("added TTFT p50 ms, 64 a second arriving evenly", "stream-spread", added_ttft),
        (f"{photo_bytes / 1e6:.1f} MB photo, the same each time, 8 in flight: CPU µs/request", "image",
         lambda r, d: f"{r['cpu_us_per_request']:,.0f}"),
        (f"{photo_bytes / 1e6:.1f} MB photo, a new one each time: CPU µs/request", "image-new",
         lambda r, d: f"{r['cpu_us_per_request']:,.0f}"),
    ]
    rows = [f"| {name} | " + " | ".join(cell(load, name, fmt) for _, load, fmt in columns) + " |"
            for name in ("vlserve", "naive adapter")]
    ratios = [f"{label}: {ratio(results[load]['vlserve'][key], results[load]['naive adapter'][key])}"
              for label, load, key in (("per small request", "small", "cpu_us_per_request"),
                                       ("per streamed chunk", "stream", "cpu_us_per_chunk"),
                                       ("per repeated photo", "image", "cpu_us_per_request"),
                                       ("per new photo", "image-new", "cpu_us_per_request")) if load in results]
    only = "".join(f" --only {name}" for name in args.only or [])
    return (f"\n## Gateway overhead side by side (`bench/overhead.py`)\n\n"
            f"Command: `python bench/overhead.py --requests {args.requests}{only}`  \n"
            f"Date: {datetime.date.today()}; machine: {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}; gateway pinned to core 0, engine and client on core 1\n\n"
            "| gateway | " + " | ".join(name for name, _, _ in columns) + " |\n"
            "|---|" + "---:|" * len(columns) + "\n" + "\n".join(rows) + "\n\n"
            "vlserve's CPU against the naive adapter's, " + "; ".join(ratios) + ".\n")


if __name__ == "__main__":
    main()
