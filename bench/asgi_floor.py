"""Benchmark: how low a Python gateway's cost can go, and whether another server helps.

    python bench/asgi_floor.py [--requests 1000]    # granian: pip install granian first

Same loads, engine, pinning and CPU accounting as bench/overhead.py (small answers, 16
in flight; streams with chunks 25 ms apart, 64 in flight; a 1 MB photo per request, the
same one or a new one each time), side by side in one run, with each gateway's ratio to
the floor on the same server:

- vlserve as it runs (uvicorn with http_server.py's protocol);
- vlserve's app under granian (Rust HTTP server, one worker, uvloop), when installed;
- the floor: `relay` below, the least a Python relay of /v1/chat/completions can do
  (parse, forward with aiohttp, pass the bytes back; no validation, keys, limits, media,
  admission or metrics), under uvicorn and under granian;
- the naive adapter, the yardstick of issue 14's targets.

No behaviour can be added to the floor without adding to its cost, so a target below the
floor is out of reach for any gateway on that server.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import aiohttp
import orjson

sys.path.insert(0, os.path.dirname(__file__))
import overhead
from overhead import free_port, start, wait_ready

_JSON = [(b"content-type", b"application/json")]


async def relay(scope, receive, send) -> None:
    """The floor: an ASGI app that only relays chat completions to UPSTREAM_BASE_URL."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":  # startup, then shutdown
            relay.session = aiohttp.ClientSession()  # type: ignore[attr-defined]
            await send({"type": "lifespan.startup.complete"})
        await relay.session.close()  # type: ignore[attr-defined]
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] != "/v1/chat/completions":  # readiness
        await send({"type": "http.response.start", "status": 200, "headers": _JSON})
        await send({"type": "http.response.body", "body": b"{}"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = orjson.loads(body)
    url = os.environ["UPSTREAM_BASE_URL"] + "/v1/chat/completions"
    session = relay.session  # type: ignore[attr-defined]
    async with session.post(url, data=orjson.dumps(request), headers={"content-type": "application/json"}) as answer:
        if request.get("stream"):
            await send({"type": "http.response.start", "status": answer.status,
                        "headers": [(b"content-type", b"text/event-stream")]})
            async for chunk in answer.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            data = await answer.read()
            await send({"type": "http.response.start", "status": answer.status, "headers": _JSON})
            await send({"type": "http.response.body", "body": data})


def granian(target: str, port: int, env: dict) -> list[str]:
    return [sys.executable, "-m", "granian", "--interface", "asgi", "--workers", "1", "--loop", "uvloop",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log", target]


def start_all(engine) -> dict:
    env = {"UPSTREAM_BASE_URL": engine.url, "ACCESS_LOG": "false", "LOG_LEVEL": "warning",
           "MAX_CONCURRENT_REQUESTS": "1024",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.path.dirname(__file__), os.environ.get("PYTHONPATH")]))}
    with_granian = importlib.util.find_spec("granian") is not None
    commands = {
        "vlserve (uvicorn)": lambda port: [sys.executable, "-m", "vlserve.cli", "serve"],
        "vlserve (granian)": lambda port: granian("asgi_floor:vlserve_app", port, env),
        "floor (uvicorn)": lambda port: [sys.executable, "-m", "uvicorn", "--loop", "uvloop", "--http", "httptools",
                                         "--no-access-log", "--log-level", "warning", "--port", str(port),
                                         "asgi_floor:relay"],
        "floor (granian)": lambda port: granian("asgi_floor:relay", port, env),
        "naive adapter": lambda port: [sys.executable, os.path.join(os.path.dirname(__file__), "naive_adapter.py"),
                                       "--port", str(port), "--upstream", engine.url],
    }
    found = {}
    for name, command in commands.items():
        if "granian" in name and not with_granian:
            continue
        port = free_port()
        found[name] = (f"http://127.0.0.1:{port}", start(command(port), env={**env, "PORT": str(port)}, core=0))
        wait_ready(found[name][0] + ("/v1/models" if name == "naive adapter" else "/health"))
    return found


def __getattr__(name: str):
    if name == "vlserve_app":  # for granian: vlserve's app, made from the environment's settings
        from vlserve.config import Settings
        from vlserve.server.app import create_app
        return create_app(Settings())
    raise AttributeError(name)


LOADS = ("small", "stream", "image", "image-new")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--only", choices=LOADS, action="append", help="run only this load (repeatable)")
    args = parser.parse_args()
    overhead.pin_load_generator()
    specs = overhead.loads(args.requests)
    results = {name: overhead.run_load(name, *specs[name], start_gateways=start_all)
               for name in LOADS if not args.only or name in args.only}
    print(table(results))


def table(results: dict[str, dict[str, dict]]) -> str:
    """One row per gateway, then each one's ratio to the floor on the same server."""
    columns = [("small: CPU µs/request", "small", lambda r, d: r["cpu_us_per_request"], "{:,.0f}"),
               ("stream: CPU µs/chunk", "stream", lambda r, d: r["cpu_us_per_chunk"], "{:.1f}"),
               ("stream throughput vs direct", "stream", lambda r, d: r["chunks_per_s"] / d["chunks_per_s"], "{:.2f}×"),
               ("TTFT p50 ms", "stream", lambda r, d: r["summary"]["ttft_ms"]["p50"], "{:.1f}"),
               ("1 MB photo, the same each time: CPU µs/request", "image", lambda r, d: r["cpu_us_per_request"],
                "{:,.0f}"),
               ("1 MB photo, a new one each time: CPU µs/request", "image-new",
                lambda r, d: r["cpu_us_per_request"], "{:,.0f}")]
    columns = [column for column in columns if column[1] in results]
    gateways = [name for name in next(iter(results.values())) if name != "direct"]

    def value(name: str, load: str, measure) -> float:
        return measure(results[load][name], results[load]["direct"])

    lines = ["| gateway | " + " | ".join(title for title, *_ in columns) + " |", "|---|" + "---:|" * len(columns)]
    lines += [f"| {name} | " + " | ".join(fmt.format(value(name, load, measure)) for _, load, measure, fmt in columns)
              + " |" for name in gateways]
    for name in gateways:
        floor = "floor (granian)" if "granian" in name else "floor (uvicorn)"
        if name.startswith("floor") or floor not in gateways:
            continue
        ratios = [f"{title.split(':')[0]} {value(name, load, measure) / value(floor, load, measure):.2f}×"
                  for title, load, measure, _ in columns if "CPU" in title]
        lines.append(f"\n{name} against {floor}: " + "; ".join(ratios))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
