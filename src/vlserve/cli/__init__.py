"""The `vlserve` command: serve, launch, chat, analyze, gpu, bench, tiny-model.

One module per family of commands; importing them registers them on the one Typer app.
"""

from __future__ import annotations

import sys

# isort: off  (commands are listed in --help in the order they are registered)
from vlserve.cli import analyze_command, client_commands, server_commands  # noqa: F401

# isort: on
from vlserve.cli.common import app


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
