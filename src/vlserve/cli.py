"""The `vlserve` command: serve, chat, gpu, tiny-model."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from vlserve.analysis import describe_tasks
from vlserve.analysis.tasks import TASKS
from vlserve.config import Settings, SettingsError, check_local_model, load_settings
from vlserve.server.observability import configure_access_log

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Serve Qwen3-VL (and other vision-language models) behind an OpenAI-compatible API.")
console = Console()

ServerOption = Annotated[str | None, typer.Option(
    "--server", "-s", envvar="VLSERVE_URL", show_default=False,
    help="vlserve base URL [default: http://127.0.0.1:$PORT, PORT defaulting to 8000]")]
KeyOption = Annotated[str | None, typer.Option("--api-key", envvar="VLSERVE_API_KEY",
                                               help="API key, if the server needs one")]


def _settings(**overrides) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        typer.echo(f"vlserve: {exc}", err=True)
        raise typer.Exit(2) from None


def _server_settings(**overrides) -> Settings:
    """Settings for a command that serves HTTP, with logging set up (request lines as JSON)."""
    settings = _settings(**overrides)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_access_log(settings.access_log, settings.log_level)
    return settings


def _startup_banner(settings: Settings) -> str:
    url = f"http://{settings.host}:{settings.port}"
    if settings.engine_kind == "upstream":
        return f"vlserve on {url}: forwarding to {', '.join(settings.upstream_base_url)}"
    if not settings.model_path:
        return (f"vlserve on {url}: serving the built-in TINY RANDOM Qwen3-VL on the local engine. "
                "Its answers are random by design (it exists for tests and demos). To serve a real model, "
                "set MODEL_PATH=/path/to/Qwen3-VL-... (or a hub id), or point at an engine with "
                "UPSTREAM_BASE_URL=http://host:23333.")
    return f"vlserve on {url}: serving {settings.model_path} on the local engine"


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [env HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [env PORT]")] = None,
    model: Annotated[str | None,
                     typer.Option(help="Model path or hub id for the local engine [env MODEL_PATH]")] = None,
) -> None:
    """Run the HTTP service (local engine by default; upstream when UPSTREAM_BASE_URL is set)."""
    from vlserve.server import serving
    from vlserve.server.app import create_app

    settings = _server_settings(HOST=host, PORT=port, MODEL_PATH=model)
    if settings.engine_kind == "local":
        try:
            check_local_model(settings)
        except SettingsError as exc:
            typer.echo(f"vlserve: {exc}", err=True)
            raise typer.Exit(2) from None
    typer.echo(_startup_banner(settings), err=True)
    serving.run(serving.serve(create_app(settings), settings))


@app.command()
def launch(
    host: Annotated[str | None, typer.Option(help="Address to listen on [env HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [env PORT]")] = None,
    model: Annotated[str | None, typer.Option(help="Checkpoint LMDeploy serves [env MODEL_PATH]")] = None,
) -> None:
    """Start LMDeploy as a supervised child and serve the gateway in front of it (the container entrypoint)."""
    from vlserve.launch.launcher import run_launcher

    settings = _server_settings(HOST=host, PORT=port, MODEL_PATH=model)
    try:
        code = run_launcher(settings)
    except SettingsError as exc:
        typer.echo(f"vlserve: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def _fail(command: str, message: object, code: int = 1) -> typer.Exit:
    typer.echo(f"vlserve {command}: {message}", err=True)
    return typer.Exit(code)


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
        raise _fail("chat", explain(exc, server)) from None


@app.command()
def gpu(
    server: Annotated[str | None, typer.Option("--server", "-s", envvar="VLSERVE_URL", show_default=False,
                                               help="Ask a running service instead of this machine")] = None,
    api_key: KeyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Print the GPU table (this machine's, or a running service's)."""
    if server:
        from vlserve.tools.client import ClientError, VLClient

        try:
            with VLClient(server, api_key, timeout=10) as client:
                status = client.gpu_status()
        except ClientError as exc:
            raise _fail("gpu", exc) from None
    else:
        from vlserve.server.gpu import GpuMonitor
        monitor = GpuMonitor()
        monitor.start()
        status = monitor.status()
        monitor.close()
    if as_json:
        console.out(json.dumps(status, indent=2))
        return
    console.print(_gpu_table(status, server or "this machine"))


def _gpu_table(status: dict[str, Any], where: str) -> Table:
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
def analyze(
    paths: Annotated[list[str], typer.Argument(help="Image files, folders, text files of paths/URLs, or URLs")],
    task: Annotated[str, typer.Option(help=f"One of: {describe_tasks()}")] = "caption",
    out: Annotated[Path, typer.Option(help="JSON Lines output; re-running with it resumes (failed images are "
                                      "tried again)")] = Path("results.jsonl"),
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Requests in flight")] = 4,
    question: Annotated[str | None, typer.Option(help="For qa and compare")] = None,
    objects: Annotated[str | None, typer.Option(help="Comma-separated, for detect and point")] = None,
    boxes: Annotated[bool, typer.Option(help="ocr: lines with boxes")] = False,
    schema: Annotated[Path | None, typer.Option(help="extract: a JSON Schema file")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens per answer")] = None,
    draw: Annotated[Path | None, typer.Option(help="Write copies of the images with results drawn here")] = None,
    server: ServerOption = None,
    api_key: KeyOption = None,
) -> None:
    """Analyse many images with a running service, one JSON line per image (compare: one line for all)."""
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from vlserve.tools.batch import (
        BatchJob,
        NotOurFile,
        completed_work,
        drawn_path,
        is_url,
        run_batch,
        summarize_failures,
    )
    from vlserve.tools.client import default_server
    from vlserve.tools.drawing import draw_result

    server = server or default_server()
    fields = _analyze_fields(task, question, objects, boxes, schema, max_tokens)
    _check_outputs(out, draw)
    sources = _analyze_sources(task, paths, draw)
    job = BatchJob(server=server, task=task, fields=fields, api_key=api_key, concurrency=concurrency,
                   together=TASKS[task].several_images)
    work = job.work(sources)
    failures: list[dict] = []
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}/s"), TimeRemainingColumn(), TextColumn("{task.fields[failed]} failed")]
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        bar = progress.add_task(f"{task}", total=len(work), rate="-", failed=0)

        def record(line: dict) -> None:
            if not line["ok"]:
                failures.append(line)
            elif draw and not job.together and not is_url(line["source"]):
                try:
                    draw_result(Path(line["source"]), line.get("result") or {}, drawn_path(draw, line["source"]))
                except Exception as exc:  # a drawing is a by-product: the result line is already written
                    progress.console.print(f"could not draw {line['source']}: {exc}", highlight=False)
            speed = progress.tasks[0].speed
            progress.update(bar, advance=1, failed=len(failures), rate=f"{speed:.1f}" if speed else "-")

        try:
            already = len(completed_work(out) & {" + ".join(w) for w in work})
        except NotOurFile as exc:
            progress.stop()
            raise _fail("analyze", exc, code=2) from None
        progress.update(bar, completed=already)  # resumed
        try:
            ran = asyncio.run(run_batch(job, sources, out, record))
        except KeyboardInterrupt:
            progress.stop()
            typer.echo(f"interrupted: {ran_so_far(progress, bar, already)} done this run, {len(failures)} failed; "
                       f"results so far are in {out}; run the same command again to resume", err=True)
            raise typer.Exit(130) from None
    typer.echo(f"{ran} analysed ({ran - len(failures)} ok, {len(failures)} failed), {already} already done "
               f"in {out}", err=True)
    if failures:
        typer.echo("failures by reason:\n  " + "\n  ".join(summarize_failures(failures)), err=True)
        typer.echo(f"run the same command again to retry the {len(failures)} failed", err=True)
        raise typer.Exit(1)


def ran_so_far(progress: Any, bar: Any, already: int) -> int:
    return int(progress.tasks[0].completed) - already


def _analyze_fields(task: str, question: str | None, objects: str | None, boxes: bool, schema: Path | None,
                    max_tokens: int | None) -> dict[str, Any]:
    """The request fields of a batch, checked against the task before anything is sent."""
    if task not in TASKS:
        raise _fail("analyze", f"unknown task {task!r}; tasks are: {', '.join(TASKS)}", code=2)
    spec = TASKS[task]
    if spec.needs_question and not question:
        raise _fail("analyze", f"--task {task} needs --question", code=2)
    if spec.needs_schema and schema is None:
        raise _fail("analyze", f"--task {task} needs --schema FILE (a JSON Schema)", code=2)
    fields: dict[str, Any] = {k: v for k, v in {"question": question, "max_tokens": max_tokens}.items()
                              if v is not None}
    if objects:
        fields["objects"] = [o.strip() for o in objects.split(",") if o.strip()]
    if boxes:
        fields["boxes"] = True
    if schema is not None:
        try:
            fields["schema"] = json.loads(schema.read_text())
        except OSError as exc:
            raise _fail("analyze", f"--schema {schema}: {exc.strerror}", code=2) from None
        except ValueError as exc:
            raise _fail("analyze", f"--schema {schema} is not valid JSON: {exc}", code=2) from None
        if not isinstance(fields["schema"], dict):
            raise _fail("analyze", f"--schema {schema} must hold a JSON object (a JSON Schema)", code=2)
    return fields


def _check_outputs(out: Path, draw: Path | None) -> None:
    if out.is_dir():
        raise _fail("analyze", f"--out {out} is a folder; give a file such as {out / 'results.jsonl'}", code=2)
    if not out.parent.is_dir():
        raise _fail("analyze", f"--out {out}: the folder {out.parent} does not exist", code=2)
    if draw is not None and draw.exists() and not draw.is_dir():
        raise _fail("analyze", f"--draw {draw} is a file; give a folder for the drawn copies", code=2)


def _analyze_sources(task: str, paths: list[str], draw: Path | None = None) -> list[str]:
    from vlserve.tools.batch import collect_sources, missing_inputs

    missing = missing_inputs(paths)
    if missing:
        raise _fail("analyze", f"no such file or folder: {', '.join(missing)}", code=2)
    sources = collect_sources(paths, skip=draw)
    if not sources:
        raise _fail("analyze", f"no images found in {', '.join(paths)}", code=2)
    if TASKS[task].several_images and len(sources) < 2:
        raise _fail("analyze", f"--task {task} compares two or more images; got {len(sources)}", code=2)
    return sources


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
            raise _fail("bench", f"--image-size {image_size!r}: write WIDTHxHEIGHT, e.g. 1280x960", code=2) from None
    config = BenchConfig(url=server or default_server(), model=model, api_key=api_key, stream=stream,
                         prompt=prompt, max_tokens=max_tokens, image_size=size, concurrency=concurrency, rate=rate,
                         duration_s=duration, requests=requests, warmup_s=warmup,
                         extra={"ignore_eos": True} if ignore_eos else {})
    try:
        summary = run(config).summary()
    except Exception as exc:
        from vlserve.tools.client import explain
        raise _fail("bench", explain(exc, config.url)) from None
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2) + "\n")
    console.print(_bench_table(summary, config.url))
    if summary["errors"]:
        kinds = ", ".join(f"{count} × {kind}" for kind, count in summary["errors"].items())
        hint = " (the server needs an API key: --api-key or VLSERVE_API_KEY)" if "HTTP 401" in summary["errors"] else ""
        raise _fail("bench", f"{summary['requests'] - summary['ok']} of {summary['requests']} requests failed: "
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


@app.command("tiny-model")
def tiny_model(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the checkpoint to")],
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same checkpoint)")] = 0,
) -> None:
    """Build the tiny random Qwen3-VL checkpoint (offline, a few seconds)."""
    from vlserve.engines.local.tiny_model import build_tiny_model

    path = build_tiny_model(out_dir, seed)
    typer.echo(f"tiny random Qwen3-VL written to {path}", err=True)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
