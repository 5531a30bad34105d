"""The command line and environment of the engine that `vlserve launch` supervises.

By default that is LMDeploy's OpenAI server, built from settings (the origin design's
flags). Each flag is passed only if the installed LMDeploy lists it in its `--help`,
so one vlserve works across LMDeploy versions (flags read in LMDeploy 0.11.1's and
0.16's `lmdeploy/cli/serve.py`: all of those used here exist in both). ENGINE_COMMAND
replaces the whole command (another engine, or a substitute in tests).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from .config import Settings, SettingsError

log = logging.getLogger("vlserve.launch")

HELP_TIMEOUT_S = 180


def engine_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.engine_port}"


def lmdeploy_base() -> list[str]:
    return [sys.executable, "-m", "lmdeploy", "serve", "api_server"]


def accepted_flags(base: list[str]) -> set[str] | None:
    """The flags the installed LMDeploy's api_server accepts, or None if it can't say."""
    try:
        out = subprocess.run([*base, "--help"], capture_output=True, text=True, timeout=HELP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("could not ask LMDeploy for its flags (%s); passing all of them", exc)
        return None
    if out.returncode != 0:
        raise SettingsError("LMDeploy is not usable here: `lmdeploy serve api_server --help` failed: "
                            + (out.stderr.strip().splitlines() or ["no output"])[-1])
    return set(re.findall(r"--[a-z0-9][a-z0-9-]*", out.stdout))


def lmdeploy_args(settings: Settings, accepted: set[str] | None) -> list[str]:
    if not settings.model_path:
        raise SettingsError("vlserve launch needs MODEL_PATH (the checkpoint LMDeploy serves)")
    name = settings.served_model_name or Path(settings.model_path.rstrip("/")).name
    flags: list[tuple[str, str | None]] = [
        ("--backend", "pytorch"), ("--tp", str(settings.tensor_parallel_size)),
        ("--server-name", "127.0.0.1"), ("--server-port", str(settings.engine_port)),
        ("--session-len", str(settings.max_model_len)),
        ("--distributed-executor-backend", settings.lmdeploy_executor_backend),
        ("--model-name", name), ("--log-level", "INFO"),
    ]
    if settings.lmdeploy_cache_max_entry_count is not None:
        flags.append(("--cache-max-entry-count", str(settings.lmdeploy_cache_max_entry_count)))
    if settings.lmdeploy_max_batch_size is not None:
        flags.append(("--max-batch-size", str(settings.lmdeploy_max_batch_size)))
    if not settings.lmdeploy_metrics:
        flags.append(("--disable-metrics", None))
    args = [settings.model_path]
    for flag, value in flags:
        if accepted is not None and flag not in accepted:
            log.warning("this LMDeploy does not accept %s; leaving it out", flag)
            continue
        args += [flag] if value is None else [flag, value]
    return args + shlex.split(settings.lmdeploy_extra_args)


def engine_command(settings: Settings) -> list[str]:
    if settings.engine_command:
        return shlex.split(settings.engine_command)
    base = lmdeploy_base()
    return base + lmdeploy_args(settings, accepted_flags(base))


def engine_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["LMDEPLOY_SKIP_WARMUP"] = str(settings.lmdeploy_skip_warmup).lower()
    env["LMDEPLOY_ENABLE_CHECK_ENV"] = str(settings.lmdeploy_enable_check_env).lower()
    env["PYTHONUNBUFFERED"] = "1"  # its log lines reach ours as they happen
    return env
