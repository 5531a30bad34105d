"""Real vlserve processes on 127.0.0.1 for integration tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`vlserve serve` in a child process; logs go to a file shown when a test needs them."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        self._env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), "LOCAL_THREADS": "1",
                     "LOG_LEVEL": "info", **env}
        self._proc: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen([sys.executable, "-m", "vlserve.cli", "serve"], env=self._env,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_listening(self, timeout: float = 60) -> ServerProcess:
        self._wait(lambda r: True, timeout, "listening")
        return self

    def wait_healthy(self, timeout: float = 90) -> ServerProcess:
        self._wait(lambda r: r.status_code == 200, timeout, "healthy")
        return self

    def _wait(self, ok, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"server exited with {self._proc.returncode}:\n{self.logs()}")
            try:
                if ok(httpx.get(f"{self.url}/health", timeout=2)):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not {what} after {timeout}s:\n{self.logs()}")

    def send_signal(self, sig: int) -> None:
        assert self._proc is not None
        self._proc.send_signal(sig)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
