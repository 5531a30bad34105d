"""The Docker client as the container tests use it: Debian's `docker` CLI against the
daemon .ci/container.sh started (DOCKER_HOST), and the image it built (VLSERVE_TEST_IMAGE)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx

from ..servers import free_port
from ..waiting import eventually

IMAGE = os.environ.get("VLSERVE_TEST_IMAGE", "")
DOCKER = os.environ.get("VLSERVE_TEST_DOCKER", "docker")
STAND_IN = Path(__file__).parents[1] / "scripted_upstream.py"
STAND_IN_IN_CONTAINER = "/stand-in/scripted_upstream.py"
ANSWER = "The stand-in engine answers this, word by word."
# Containers start and stop in seconds, but a loaded 2-core machine may take many.
PATIENCE_S = 90


def docker(*args: str, check: bool = True, timeout: float = 120, input: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def inspect(name: str) -> dict:
    return json.loads(docker("inspect", name).stdout)[0]


def health_status(name: str) -> str:
    state = inspect(name)["State"]
    return state.get("Health", {}).get("Status", "none") if state["Running"] else "exited"


def stand_in_command(port: int, hold: bool = False) -> str:
    return f"python {STAND_IN_IN_CONTAINER} --port {port} --answer '{ANSWER}'" + (" --hold" if hold else "")


class Gateway:
    """One container of the image, started by `vlserve launch` (its entrypoint) with the
    stand-in engine, on the host's network (this daemon has no bridge), under its own
    ports, with a healthcheck that runs every second instead of every 30."""

    def __init__(self, name: str, *run_args: str, hold: bool = False, **env: str) -> None:
        self.name = name
        self.port, self.engine_port = free_port(), free_port()
        self.url, self.engine_url = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{self.engine_port}"
        settings = {"PORT": str(self.port), "ENGINE_PORT": str(self.engine_port),
                    "ENGINE_COMMAND": stand_in_command(self.engine_port, hold),
                    "ENGINE_STARTUP_TIMEOUT_S": "60", "DRAIN_TIMEOUT_S": "30", **env}
        environment = [arg for key, value in settings.items() for arg in ("-e", f"{key}={value}")]
        docker("rm", "-f", name, check=False)
        docker("run", "-d", "--name", name, "--network", "host",
               "-v", f"{STAND_IN}:{STAND_IN_IN_CONTAINER}:ro",
               "--health-interval", "1s", "--health-timeout", "5s", "--health-retries", "2",
               "--health-start-period", "60s", *environment, *run_args, IMAGE)

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def wait_healthy(self) -> None:
        status = eventually(lambda: health_status(self.name) in ("healthy", "exited") and health_status(self.name),
                            PATIENCE_S, interval=0.2)
        assert status == "healthy", f"container is {status}:\n{self.logs()}"

    def engine(self, action: str) -> httpx.Response:
        return httpx.post(f"{self.engine_url}/stand-in/{action}", timeout=10)

    def engine_requests(self) -> list[dict]:
        return httpx.get(f"{self.engine_url}/stand-in/requests", timeout=10).json()

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)
