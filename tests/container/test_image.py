"""The gateway's image, run as a deployment runs it: `vlserve launch` as its entrypoint,
supervising an engine (the stand-in: LMDeploy needs a GPU), on a read-only root.

What each test shows a deployment relies on: the container becomes healthy and answers
through the gateway (a chat with an image, /analyze); it runs as its user; `docker stop`
lets an in-flight stream finish and ends with code 0 (the launcher is PID 1 and handles
SIGTERM); an engine that dies makes the container exit non-zero, so the orchestrator
restarts it; the healthcheck follows the engine's health both ways.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import openai
import pytest

from ..media_helpers import png
from ..waiting import eventually
from .docker import ANSWER, PATIENCE_S, Gateway, docker, health_status, inspect

pytestmark = pytest.mark.timeout(300)


@contextmanager
def running(hold: bool = False) -> Iterator[Gateway]:
    """A healthy container with a read-only root: only /tmp is writable (a tmpfs)."""
    container = Gateway("vlserve-test-image", "--read-only", "--tmpfs", "/tmp", hold=hold)
    try:
        container.wait_healthy()
        yield container
    finally:
        container.remove()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with running() as container:
        yield container


def test_answers_a_chat_with_an_image_and_analyze_as_its_user_on_a_read_only_root(gateway):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused")
    image = "data:image/png;base64," + base64.b64encode(png((64, 48))).decode()
    answer = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": image}}]}])
    assert answer.choices[0].message.content == ANSWER

    caption = httpx.post(f"{gateway.url}/analyze", json={"task": "caption", "image": image}, timeout=60)
    assert caption.status_code == 200, caption.text
    assert caption.json()["result"] == {"caption": ANSWER}

    sent = gateway.engine_requests()
    assert [part["type"] for part in sent[0]["messages"][0]["content"]] == ["text", "image_url"]
    assert len(sent) == 2 and all(part["image_url"]["url"].startswith("data:image/")
                                  for request in sent for part in request["messages"][-1]["content"]
                                  if part["type"] == "image_url")

    config, host = inspect(gateway.name)["Config"], inspect(gateway.name)["HostConfig"]
    assert config["User"] == "1000:1000" and host["ReadonlyRootfs"] is True
    status = docker("exec", gateway.name, "cat", "/proc/1/status").stdout
    assert "\nUid:\t1000\t1000" in status, status
    cmdline = docker("exec", gateway.name, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert cmdline[1:3] == ["/opt/venv/bin/vlserve", "launch"], cmdline  # PID 1: SIGTERM reaches it
    written = docker("exec", gateway.name, "touch", "/opt/venv/written", check=False)
    assert written.returncode != 0 and "Read-only file system" in written.stderr


def test_docker_stop_lets_an_in_flight_stream_finish_then_exits_zero():
    body = {"model": "scripted", "stream": True, "messages": [{"role": "user", "content": "Tell me."}]}
    stopped: list[int] = []
    with running(hold=True) as gateway, \
            httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        first = [next(lines) for _ in range(4)]  # the role, a blank line, the first word, a blank line
        assert ANSWER.split()[0] in first[2]
        # The engine holds the rest of the answer: SIGTERM arrives with the stream in flight.
        stopper = threading.Thread(target=lambda: stopped.append(
            docker("stop", "-t", "60", gateway.name, timeout=PATIENCE_S).returncode))
        stopper.start()
        assert eventually(lambda: "SIGTERM: draining in-flight requests" in gateway.logs(), PATIENCE_S), \
            gateway.logs()
        assert inspect(gateway.name)["State"]["Running"]
        gateway.engine("release")
        rest = list(lines)
        stopper.join(PATIENCE_S)
        state = inspect(gateway.name)["State"]
        logs = gateway.logs()
    events = [json.loads(line[len("data: "):]) for line in [*first, *rest] if line.startswith("data: {")]
    text = "".join(event["choices"][0]["delta"].get("content") or "" for event in events if event["choices"])
    assert text == ANSWER and "data: [DONE]" in rest
    # 0, not 137: the launcher drained and exited on SIGTERM; Docker did not have to kill it.
    assert stopped == [0] and state["ExitCode"] == 0 and not state["OOMKilled"], logs


def test_an_engine_that_dies_makes_the_container_exit_non_zero(gateway):
    with pytest.raises(httpx.HTTPError):
        gateway.engine("crash")  # the engine exits at once, without an answer
    code = docker("wait", gateway.name, timeout=PATIENCE_S).stdout.strip()
    assert code not in ("", "0"), gateway.logs()
    assert "engine exited with code 3" in gateway.logs()


def test_the_healthcheck_follows_the_engines_health(gateway):
    assert gateway.engine("sick").json() == {"sick": True}
    assert eventually(lambda: health_status(gateway.name) == "unhealthy", PATIENCE_S, interval=0.2), \
        health_status(gateway.name)
    assert httpx.get(f"{gateway.url}/health", timeout=10).status_code == 503

    assert gateway.engine("well").json() == {"sick": False}
    assert eventually(lambda: health_status(gateway.name) == "healthy", PATIENCE_S, interval=0.2), \
        health_status(gateway.name)
