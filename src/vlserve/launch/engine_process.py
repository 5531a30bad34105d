"""The engine child process: started in its own process group, its log lines forwarded
with a prefix, stopped as a whole group (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import asyncio
import collections
import ctypes
import logging
import os
import signal
import sys

log = logging.getLogger("vlserve.launch")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: if the launcher dies (even by SIGKILL), so does the engine."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux/glibc: the container's end still stops the process group
        pass


class EngineProcess:
    def __init__(self, command: list[str], env: dict[str, str], prefix: str = "[engine] ",
                 tail_lines: int = 40) -> None:
        self.command = command
        self._env = env
        self._prefix = prefix
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self.command, env=self._env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        log.info("engine started (pid %d): %s", self._proc.pid, " ".join(self.command))
        self._pump = asyncio.create_task(self._forward_logs(self._proc))

    async def _forward_logs(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None  # started with stdout=PIPE
        async for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            self.tail.append(line)
            sys.stderr.write(f"{self._prefix}{line}\n")
            sys.stderr.flush()

    async def wait(self) -> int:
        assert self._proc is not None, "start() first"
        code = await self._proc.wait()
        if self._pump:
            await asyncio.wait({self._pump}, timeout=2)  # the last lines, for the error message
        return code

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM to the whole group; SIGKILL to whatever is left after `timeout_s`."""
        if self._proc is None:
            return
        pgid = self._proc.pid  # start_new_session: the child leads its own group
        if self._proc.returncode is None:
            _signal_group(pgid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self._proc.wait(), timeout_s)
            except TimeoutError:
                log.warning("engine ignored SIGTERM for %.0f s; killing its process group", timeout_s)
        # Workers of the engine (LMDeploy's mp executor) may outlive their parent: kill the group.
        _signal_group(pgid, signal.SIGKILL)
        await self._proc.wait()
        if self._pump:
            self._pump.cancel()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
