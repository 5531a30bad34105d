"""The commands that serve: `vlserve serve`, `vlserve launch`, `vlserve healthcheck` and
`vlserve tiny-model`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from vlserve.cli.common import app, settings_or_exit
from vlserve.config import Settings, SettingsError, check_local_model
from vlserve.server.observability import configure_access_log

HEALTHCHECK_TIMEOUT_S = 4  # under the image's HEALTHCHECK --timeout=5s


def _server_settings(**overrides) -> Settings:
    """Settings for a command that serves HTTP, with logging set up (request lines as JSON)."""
    settings = settings_or_exit(**overrides)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_access_log(settings.access_log, settings.log_level)
    return settings


def _check_keys(settings: Settings) -> None:
    """A key file that cannot be used stops the start, in one line naming the key and field."""
    from vlserve.tenancy.keys import KeyFileError, load_key_ring

    try:
        load_key_ring(settings.api_keys, settings.api_keys_file)
    except KeyFileError as exc:
        typer.echo(f"vlserve: API_KEYS_FILE {settings.api_keys_file}: {exc}", err=True)
        raise typer.Exit(2) from None


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
    _check_keys(settings)
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
    _check_keys(settings)
    try:
        code = run_launcher(settings)
    except SettingsError as exc:
        typer.echo(f"vlserve: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


@app.command()
def healthcheck() -> None:
    """Exit 0 if the gateway on this machine (127.0.0.1, PORT) is healthy: the container's
    healthcheck. It reads the same settings as the server, so a changed PORT, or a key
    needed for /health (AUTH_OPEN_OPS=false), is followed."""
    import httpx

    settings = settings_or_exit()
    keys = settings.all_api_keys()
    headers = {"Authorization": f"Bearer {keys[0]}"} if keys and not settings.auth_open_ops else {}
    url = f"http://127.0.0.1:{settings.port}/health"
    try:
        response = httpx.get(url, headers=headers, timeout=HEALTHCHECK_TIMEOUT_S)
    except httpx.HTTPError as exc:
        typer.echo(f"vlserve healthcheck: no answer from {url}: {exc or type(exc).__name__}", err=True)
        raise typer.Exit(1) from None
    if response.status_code != 200:
        typer.echo(f"vlserve healthcheck: {url} answered {response.status_code}: {response.text[:300]}", err=True)
        raise typer.Exit(1)


@app.command("tiny-model")
def tiny_model(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the checkpoint to")],
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same checkpoint)")] = 0,
) -> None:
    """Build the tiny random Qwen3-VL checkpoint (offline, a few seconds)."""
    from vlserve.engines.local.tiny_model import build_tiny_model

    path = build_tiny_model(out_dir, seed)
    typer.echo(f"tiny random Qwen3-VL written to {path}", err=True)
