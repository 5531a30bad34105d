"""The commands that talk to a running service, or look at this machine: `vlserve chat`,
`vlserve gpu`, `vlserve usage` and `vlserve bench`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.table import Table

from vlserve.cli.common import KeyOption, ServerOption, app, console, fail

if TYPE_CHECKING:
    from vlserve.server.gpu import GpuStatus


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="What to ask")],
    image: Annotated[list[str] | None, typer.Option("--image", "-i", help="Image file or URL (repeatable)")] = None,
    stream: Annotated[bool, typer.Option(help="Print the answer as it is generated")] = False,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens to generate")] = None,
    server: ServerOption = None,
    api_key: KeyOption = None,
) -> None:
    """Ask the running service about zero or more images."""
    from openai import OpenAIError

    from vlserve.tools.client import ClientError, VLClient, default_server, explain, user_message

    server = server or default_server()
    sampling: dict[str, Any] = {"max_tokens": max_tokens} if max_tokens else {}
    try:
        messages = [user_message(prompt, list(image or []))]
        with VLClient(server, api_key) as client:
            if stream:
                for piece in client.chat_stream(messages, **sampling):
                    console.out(piece, end="", highlight=False)
                console.out("")
            else:
                console.out(client.chat(messages, **sampling), highlight=False)
    except (ClientError, OpenAIError, OSError) as exc:
        raise fail("chat", explain(exc, server)) from None


@app.command()
def gpu(
    server: Annotated[str | None, typer.Option("--server", "-s", envvar="VLSERVE_URL", show_default=False,
                                               help="Ask a running service instead of this machine")] = None,
    api_key: KeyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Print the GPU table (this machine's, or a running service's)."""
    from vlserve.server.gpu import GpuMonitor, GpuStatus

    if server:
        from vlserve.tools.client import ClientError, VLClient

        try:
            with VLClient(server, api_key, timeout=10) as client:
                status = cast(GpuStatus, client.gpu_status())  # the server's GpuMonitor.status()
        except ClientError as exc:
            raise fail("gpu", exc) from None
    else:
        monitor = GpuMonitor()
        monitor.start()
        status = monitor.status()
        monitor.close()
    if as_json:
        console.out(json.dumps(status, indent=2))
        return
    console.print(_gpu_table(status, server or "this machine"))


@app.command()
def usage(
    start: Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD (UTC) [default: today]")] = None,
    end: Annotated[str | None, typer.Option(help="Last day, YYYY-MM-DD (UTC), included [default: today]")] = None,
    server: ServerOption = None,
    api_key: KeyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON")] = False,
) -> None:
    """Print usage per day, key, user and model (needs an admin key)."""
    from vlserve.tools.client import ClientError, VLClient, default_server

    server = server or default_server()
    try:
        with VLClient(server, api_key, timeout=30) as client:
            rows = client.usage(start, end)
    except ClientError as exc:
        raise fail("usage", exc) from None
    if as_json:
        console.out(json.dumps(rows, indent=2))
        return
    console.print(_usage_table(rows, server))


def _usage_table(rows: list[dict[str, Any]], where: str) -> Table:
    table = Table(title=f"Usage on {where}")
    for column in ("day", "key", "user", "model", "requests", "prompt tokens", "completion tokens", "images",
                   "4xx", "5xx"):
        table.add_column(column, justify="right" if column not in ("day", "key", "user", "model") else "left")
    for row in rows:
        table.add_row(row["day"], row["key"], row["user"] or "-", row["model"] or "-", f"{row['requests']:,}",
                      f"{row['prompt_tokens']:,}", f"{row['completion_tokens']:,}", f"{row['images']:,}",
                      str(row["errors"]["4xx"]), str(row["errors"]["5xx"]))
    if not rows:
        table.add_row("(no requests in these days)", *[""] * 9)
    return table


def _gpu_table(status: GpuStatus, where: str) -> Table:
    if not status.get("available"):
        table = Table(title=f"GPUs of {where}", show_header=False)
        table.add_row("No GPU", str(status.get("reason") or "no NVIDIA GPU found"))
        return table
    table = Table(title=f"GPUs of {where} (driver {status.get('driver_version')}, "
                        f"CUDA {status.get('cuda_driver_version')})")
    for column in ("#", "name", "memory used / total (MiB)", "util %", "temp °C", "power W", "processes"):
        table.add_column(column)
    for g in status.get("gpus") or []:
        show = lambda v: "unknown" if v is None else str(v)  # noqa: E731
        table.add_row(str(g["index"]), show(g["name"]), f"{show(g['memory_used_mib'])} / {show(g['memory_total_mib'])}",
                      show(g["utilization_gpu_pct"]), show(g["temperature_c"]), show(g["power_w"]),
                      show(len(g["processes"]) if g["processes"] is not None else None))
    return table


@app.command()
def bench(
    server: ServerOption = None,
    api_key: KeyOption = None,
    model: Annotated[str | None, typer.Option(help="Model id [default: the server's first]")] = None,
    stream: Annotated[bool, typer.Option(help="Stream the answers (TTFT and ITL need it)")] = True,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight (closed loop), or the cap with --rate")]
        = 8,
    rate: Annotated[float | None, typer.Option(help="Requests per second (open loop) instead of a fixed concurrency")]
        = None,
    duration: Annotated[float, typer.Option(help="Seconds to measure (after the warm-up)")] = 30.0,
    requests: Annotated[int | None, typer.Option(help="Send this many requests instead of running for --duration")]
        = None,
    warmup: Annotated[float, typer.Option(help="Seconds at the start whose requests are not counted")] = 0.0,
    max_tokens: Annotated[int, typer.Option(help="max_tokens of each request")] = 128,
    prompt: Annotated[str, typer.Option(help="The user message")] = "Describe this picture in detail.",
    image_size: Annotated[str | None, typer.Option(help="Send a generated JPEG of WIDTHxHEIGHT in each request")]
        = None,
    ignore_eos: Annotated[bool, typer.Option(help="Ask for exactly max_tokens (LMDeploy's and vLLM's field)")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON here")] = None,
) -> None:
    """Load-test an OpenAI-compatible server: TTFT, inter-token latency, latency, throughput, errors."""
    from vlserve.tools.client import default_server
    from vlserve.tools.loadgen import BenchConfig, run

    size = None
    if image_size:
        try:
            width, height = (int(part) for part in image_size.lower().split("x"))
            size = (width, height)
        except ValueError:
            raise fail("bench", f"--image-size {image_size!r}: write WIDTHxHEIGHT, e.g. 1280x960", code=2) from None
    config = BenchConfig(url=server or default_server(), model=model, api_key=api_key, stream=stream,
                         prompt=prompt, max_tokens=max_tokens, image_size=size, concurrency=concurrency, rate=rate,
                         duration_s=duration, requests=requests, warmup_s=warmup,
                         extra={"ignore_eos": True} if ignore_eos else {})
    try:
        summary = run(config).summary()
    except Exception as exc:
        from vlserve.tools.client import explain
        raise fail("bench", explain(exc, config.url)) from None
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2) + "\n")
    console.print(_bench_table(summary, config.url))
    if summary["errors"]:
        kinds = ", ".join(f"{count} × {kind}" for kind, count in summary["errors"].items())
        hint = " (the server needs an API key: --api-key or VLSERVE_API_KEY)" if "HTTP 401" in summary["errors"] else ""
        raise fail("bench", f"{summary['requests'] - summary['ok']} of {summary['requests']} requests failed: "
                    f"{kinds}{hint}")


def _bench_table(summary: dict[str, Any], url: str) -> Table:
    mode = f"rate {summary['rate']}/s" if summary["rate"] else f"concurrency {summary['concurrency']}"
    table = Table(title=f"{url} · {summary['model']} · {'stream' if summary['stream'] else 'whole answers'} · "
                        f"{mode} · {summary['duration_s']} s")
    for column in ("", "p50", "p90", "p99", "mean"):
        table.add_column(column, justify="right")
    for name, key in (("TTFT ms", "ttft_ms"), ("inter-token ms", "itl_ms"), ("latency ms", "latency_ms")):
        row = summary[key]
        table.add_row(name, *("–" if row[k] is None else f"{row[k]:.1f}" for k in ("p50", "p90", "p99", "mean")))
    table.caption = (f"{summary['ok']} ok of {summary['requests']} · {summary['requests_per_s']} req/s · "
                     f"{summary['output_tokens_per_s']} output tokens/s · {summary['output_tokens_per_request']} "
                     f"tokens/request · errors: {summary['errors'] or 'none'}")
    return table
