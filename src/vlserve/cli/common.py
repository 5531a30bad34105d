"""What every `vlserve` command shares: the Typer app, the console, the server and key
options, reading settings, and failing with one line."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from vlserve.config import Settings, SettingsError, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Serve Qwen3-VL (and other vision-language models) behind an OpenAI-compatible API.")
console = Console()

ServerOption = Annotated[str | None, typer.Option(
    "--server", "-s", envvar="VLSERVE_URL", show_default=False,
    help="vlserve base URL [default: http://127.0.0.1:$PORT, PORT defaulting to 8000]")]
KeyOption = Annotated[str | None, typer.Option("--api-key", envvar="VLSERVE_API_KEY",
                                               help="API key, if the server needs one")]


def settings_or_exit(**overrides) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        typer.echo(f"vlserve: {exc}", err=True)
        raise typer.Exit(2) from None


def fail(command: str, message: object, code: int = 1) -> typer.Exit:
    typer.echo(f"vlserve {command}: {message}", err=True)
    return typer.Exit(code)
