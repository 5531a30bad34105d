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
from dataclasses import dataclass, field
from pathlib import Path

from vlserve.config import Settings, SettingsError

log = logging.getLogger("vlserve.launch")

HELP_TIMEOUT_S = 180


def engine_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.engine_port}"


def lmdeploy_base() -> list[str]:
    return [sys.executable, "-m", "lmdeploy", "serve", "api_server"]


@dataclass(frozen=True)
class LmdeployHelp:
    """What `lmdeploy serve api_server --help` says: its flags, and the names each parser
    flag lists (LMDeploy prints its registries there)."""

    flags: frozenset[str]
    names: dict[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> LmdeployHelp:
        flags = frozenset(re.findall(r"--[a-z0-9][a-z0-9-]*", text))
        names = {}
        for flag in (TOOL_PARSER_FLAG, REASONING_PARSER_FLAG):
            section = re.search(rf"^\s*{flag}\b(.*?)(?=^\s*-|\Z)", text, re.S | re.M)
            if section:
                names[flag] = frozenset(re.findall(r"'([A-Za-z0-9_.-]+)'", section.group(1)))
        return cls(flags, names)


TOOL_PARSER_FLAG, REASONING_PARSER_FLAG = "--tool-call-parser", "--reasoning-parser"
# Qwen3's <tool_call> format: `qwen3` (LMDeploy 0.11.1 and newer), `qwen` before; Qwen's
# <think> reasoning: `qwen-qwq` (0.11.1; still accepted as a legacy name in 0.16+), `default` after.
TOOL_PARSER_PREFERENCE = ("qwen3", "qwen")
REASONING_PARSER_PREFERENCE = ("qwen-qwq", "default")


def accepted_flags(base: list[str]) -> LmdeployHelp | None:
    """What the installed LMDeploy's api_server accepts, or None if it can't say."""
    try:
        out = subprocess.run([*base, "--help"], capture_output=True, text=True, timeout=HELP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("could not ask LMDeploy for its flags (%s); passing all of them", exc)
        return None
    if out.returncode != 0:
        raise SettingsError("LMDeploy is not usable here: `lmdeploy serve api_server --help` failed: "
                            + (out.stderr.strip().splitlines() or ["no output"])[-1])
    return LmdeployHelp.parse(out.stdout)


def _parser(setting: str, variable: str, flag: str, preference: tuple[str, ...], wanted: bool,
            accepted: LmdeployHelp | None) -> str | None:
    """The parser to pass for `flag`: "off", "auto" (the first listed of `preference`, when
    `wanted`) or a name (which must be one LMDeploy lists, when it lists any)."""
    if setting == "off" or (setting == "auto" and not wanted):
        return None
    listed = accepted.names.get(flag) if accepted is not None else None
    if setting == "auto":
        if not listed:
            return preference[0] if accepted is None or flag in accepted.flags else None
        return next((name for name in preference if name in listed), None)
    if listed and setting not in listed:
        raise SettingsError(f"invalid setting {variable}={setting!r}: this LMDeploy's {flag} takes one of "
                            f"{', '.join(sorted(listed))}")
    return setting


def is_thinking_checkpoint(settings: Settings) -> bool:
    return "thinking" in (settings.served_model_name or settings.model_path or "").lower()


def lmdeploy_args(settings: Settings, accepted: LmdeployHelp | None) -> list[str]:
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
    tool_parser = _parser(settings.lmdeploy_tool_call_parser, "LMDEPLOY_TOOL_CALL_PARSER", TOOL_PARSER_FLAG,
                          TOOL_PARSER_PREFERENCE, True, accepted)
    reasoning_parser = _parser(settings.lmdeploy_reasoning_parser, "LMDEPLOY_REASONING_PARSER",
                               REASONING_PARSER_FLAG, REASONING_PARSER_PREFERENCE,
                               is_thinking_checkpoint(settings), accepted)
    for flag, parser in ((TOOL_PARSER_FLAG, tool_parser), (REASONING_PARSER_FLAG, reasoning_parser)):
        if parser is not None:
            flags.append((flag, parser))
    args = [settings.model_path]
    for flag, value in flags:
        if accepted is not None and flag not in accepted.flags:
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
