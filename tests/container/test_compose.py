"""The deploy compose files, brought up and down with docker-compose.

Each file is run as written except for what this machine cannot have, changed in
`for_this_machine`: no GPU (the device reservations go), no right to raise the locked-memory limit (`ulimits` goes), no bridge network (host
networking, so each service gets its own ports and the gateway finds its replicas on
127.0.0.1 instead of by service name), the image CI built instead of `build:`, the
stand-in engine instead of LMDeploy, and a healthcheck every second instead of every 30.
Everything else (entrypoints, environment, volumes, init, restart, stop_grace_period,
the healthcheck's command, depends_on) is the file's own.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from ..servers import free_port
from ..waiting import eventually
from .docker import (
    ANSWER,
    IMAGE,
    PATIENCE_S,
    STAND_IN,
    STAND_IN_IN_CONTAINER,
    docker,
    health_status,
    inspect,
    stand_in_command,
)

pytestmark = pytest.mark.timeout(300)

DEPLOY = Path(__file__).parents[2] / "deploy"


def for_this_machine(service: dict, port: int, engine_port: int | None = None) -> dict:
    service = copy.deepcopy(service)
    # ulimits: raising RLIMIT_MEMLOCK is not permitted in this machine's sandbox.
    for key in ("build", "ports", "deploy", "ulimits"):
        service.pop(key, None)
    service.update(image=IMAGE, network_mode="host")
    environment = service.setdefault("environment", {})
    environment["PORT"] = str(port)
    if engine_port is not None:
        environment.update(ENGINE_PORT=str(engine_port), ENGINE_COMMAND=stand_in_command(engine_port),
                           ENGINE_STARTUP_TIMEOUT_S="60")
        service.setdefault("volumes", []).append(f"{STAND_IN}:{STAND_IN_IN_CONTAINER}:ro")
    if "healthcheck" in service:
        service["healthcheck"].update(interval="1s", start_period="60s", retries=2)
    return service


class Compose:
    def __init__(self, tmp_path: Path, project: str, services: dict) -> None:
        self.file, self.project = tmp_path / "compose.yaml", project
        self.file.write_text(yaml.safe_dump({"services": services}))

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["docker-compose", "-p", self.project, "-f", str(self.file), *args],
                                capture_output=True, text=True, timeout=PATIENCE_S * 2)
        assert result.returncode == 0, f"docker-compose {' '.join(args)}:\n{result.stdout}{result.stderr}"
        return result

    def container(self, service: str) -> str:
        return self("ps", "-q", service).stdout.strip()

    def wait_healthy(self, service: str) -> str:
        container = self.container(service)
        assert eventually(lambda: health_status(container) == "healthy", PATIENCE_S, interval=0.2), \
            docker("logs", container, check=False).stderr
        return container


@pytest.fixture
def compose(tmp_path) -> Iterator[Callable[[str, dict], Compose]]:
    made: list[Compose] = []

    def make(project: str, services: dict) -> Compose:
        made.append(Compose(tmp_path, project, services))
        return made[-1]

    yield make
    for project in made:
        subprocess.run(["docker-compose", "-p", project.project, "-f", str(project.file), "down", "-v", "-t", "5"],
                       capture_output=True, timeout=PATIENCE_S * 2)


def chat(url: str) -> str | None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    answer = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "Hello?"}])
    return answer.choices[0].message.content


def test_one_container_on_four_gpus_comes_up_answers_and_stops_cleanly(compose):
    service = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["vlserve"]
    port = free_port()
    project = compose("vlserve-ci-one", {"vlserve": for_this_machine(service, port, free_port())})
    project("up", "-d")
    container = project.wait_healthy("vlserve")
    assert chat(f"http://127.0.0.1:{port}") == ANSWER
    # `init: true`: Docker's init is PID 1, reaps the engine's orphans and passes SIGTERM on.
    assert docker("exec", container, "cat", "/proc/1/cmdline").stdout.startswith("/sbin/docker-init")

    project("stop")  # SIGTERM, then up to stop_grace_period
    state = inspect(container)["State"]
    assert state["ExitCode"] == 0, docker("logs", container, check=False).stderr
    project("down")
    assert docker("ps", "-aq", "--filter", f"id={container}").stdout.strip() == ""


def test_replicas_behind_one_gateway_come_up_and_share_the_work(compose):
    services = yaml.safe_load((DEPLOY / "compose.replicas.yaml").read_text())["services"]
    replicas = sorted(name for name in services if name.startswith("replica"))
    ports = {name: (free_port(), free_port()) for name in replicas}
    derived = {name: for_this_machine(services[name], *ports[name]) for name in replicas}
    gateway_port = free_port()
    derived["gateway"] = for_this_machine(services["gateway"], gateway_port)
    urls = derived["gateway"]["environment"]["UPSTREAM_BASE_URL"].split(",")
    assert urls == [f"http://{name}:8000" for name in replicas]  # the file's own, by service name
    derived["gateway"]["environment"]["UPSTREAM_BASE_URL"] = ",".join(
        f"http://127.0.0.1:{ports[name][0]}" for name in replicas)

    project = compose("vlserve-ci-replicas", derived)
    project("up", "-d")
    project.wait_healthy("gateway")
    url = f"http://127.0.0.1:{gateway_port}"
    health = eventually(lambda: (body := httpx.get(f"{url}/health", timeout=10).json())
                        and all(r["ready"] for r in body.get("replicas", [])) and body, PATIENCE_S)
    assert health and len(health["replicas"]) == len(replicas), health

    for _ in range(2 * len(replicas)):
        assert chat(url) == ANSWER
    served = [len(json.loads(httpx.get(f"http://127.0.0.1:{ports[name][1]}/stand-in/requests").text))
              for name in replicas]
    assert sum(served) == 2 * len(replicas) and all(served), served
    project("down")
