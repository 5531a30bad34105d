"""`vlserve launch` around a real substitute engine: a second vlserve serving the tiny model.

ENGINE_COMMAND replaces LMDeploy's command line; everything else (process group, log
forwarding, readiness, supervision, signals, drain) is the launcher's real behaviour.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import httpx
import pytest

from ..servers import free_port
from ..waiting import eventually

pytestmark = pytest.mark.timeout(180)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Launch:
    def __init__(self, tmp_path, engine_command: str, **env: str) -> None:
        self.port, self.engine_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "launch.log"
        full_env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), "ENGINE_PORT": str(self.engine_port),
                    "LOCAL_THREADS": "1", "ENGINE_COMMAND": engine_command.format(port=self.engine_port),
                    "DRAIN_TIMEOUT_S": "20", "ENGINE_STOP_TIMEOUT_S": "5", **env}
        self.proc = subprocess.Popen([sys.executable, "-m", "vlserve.cli", "launch"], env=full_env,
                                     stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text()

    def health(self) -> httpx.Response | None:
        try:
            return httpx.get(f"{self.url}/health", timeout=5)
        except httpx.HTTPError:
            return None

    def wait_for(self, predicate, timeout: float = 90) -> None:
        assert eventually(lambda: self.proc.poll() is not None or predicate(), timeout), \
            f"timed out; launcher output:\n{self.output()}"
        assert self.proc.poll() is None, self.output()

    def engine_pid(self) -> int:
        for line in self.output().splitlines():
            if "engine started (pid" in line:
                return int(line.split("engine started (pid ")[1].split(")")[0])
        raise AssertionError(self.output())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def engine_cmd(tiny_model_dir) -> str:
    return f"{sys.executable} -m vlserve.cli serve --host 127.0.0.1 --port {{port}} --model {tiny_model_dir}"


def test_start_wait_serve_then_sigterm_drains_and_stops_the_engine(tmp_path, engine_cmd):
    launch = Launch(tmp_path, engine_cmd)
    try:
        launch.wait_for(lambda: launch.health() is not None)
        first = launch.health()
        assert first.status_code in (200, 503)  # 503 while the engine loads
        launch.wait_for(lambda: launch.health().status_code == 200)
        pid = launch.engine_pid()
        assert "[engine] " in launch.output()  # the engine's own log lines, prefixed

        result: dict = {}
        answering = threading.Event()

        def long_request():
            with httpx.stream("POST", f"{launch.url}/v1/chat/completions", timeout=60, json={
                    "model": "qwen3-vl-tiny-random", "max_tokens": 400, "temperature": 1.0, "stream": True,
                    "messages": [{"role": "user", "content": "tell me a long story"}]}) as resp:
                result["status"], chunks = resp.status_code, resp.iter_bytes()
                result["body"] = next(chunks)
                answering.set()
                result["body"] += b"".join(chunks)

        thread = threading.Thread(target=long_request)
        thread.start()
        assert answering.wait(60), "the request never started answering"
        launch.proc.send_signal(signal.SIGTERM)
        thread.join(60)
        assert result["status"] == 200
        events = [e for e in result["body"].split(b"\n\n") if e.strip()]
        assert events[-1] == b"data: [DONE]" and b'"error"' not in result["body"]  # drained, not cut
        assert launch.proc.wait(60) == 0, launch.output()
        assert not alive(pid)  # no orphaned engine
    finally:
        launch.stop()


def test_engine_crash_makes_the_launcher_exit_non_zero(tmp_path, engine_cmd):
    launch = Launch(tmp_path, engine_cmd)
    try:
        launch.wait_for(lambda: (h := launch.health()) is not None and h.status_code == 200)
        os.kill(launch.engine_pid(), signal.SIGKILL)
        assert launch.proc.wait(60) == 1, launch.output()
        assert "exited with code -9" in launch.output()
    finally:
        launch.stop()


def test_engine_restart_with_backoff(tmp_path, engine_cmd):
    launch = Launch(tmp_path, engine_cmd, ENGINE_RESTART="true", ENGINE_MAX_RESTARTS="2")
    try:
        launch.wait_for(lambda: (h := launch.health()) is not None and h.status_code == 200)
        first = launch.engine_pid()
        os.kill(first, signal.SIGKILL)
        launch.wait_for(lambda: launch.health().status_code == 503, timeout=10)  # down at once
        launch.wait_for(lambda: launch.output().count("engine started (pid") == 2, timeout=30)
        launch.wait_for(lambda: launch.health().status_code == 200)
        launch.proc.send_signal(signal.SIGINT)
        assert launch.proc.wait(60) == 0
    finally:
        launch.stop()


def test_start_up_timeout_names_the_limit_and_shows_the_engines_last_lines(tmp_path):
    slow = f"{sys.executable} -u -c \"import time; print('loading weights...'); time.sleep(120)\""
    launch = Launch(tmp_path, slow, ENGINE_STARTUP_TIMEOUT_S="3")
    try:
        assert launch.proc.wait(60) == 1
        out = launch.output()
        assert "did not become ready within 3 s" in out and "loading weights..." in out
    finally:
        launch.stop()


def test_engine_that_exits_at_start(tmp_path):
    launch = Launch(tmp_path, f"{sys.executable} -c \"import sys; print('CUDA out of memory'); sys.exit(3)\"")
    try:
        assert launch.proc.wait(60) == 1
        assert "exited with code 3 while starting" in launch.output() and "CUDA out of memory" in launch.output()
    finally:
        launch.stop()
