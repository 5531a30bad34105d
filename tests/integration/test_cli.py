"""The `vlserve` command and the origin design's test scripts, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ..scripted_upstream import ScriptedUpstream
from ..servers import ServerProcess
from ..waiting import eventually
from .conftest import KEYS, png_bytes

ROOT = Path(__file__).parents[2]


def run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def vlserve(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "vlserve.cli", *args, **kwargs)


def test_chat_with_an_image(local_server, tmp_path):
    image = tmp_path / "red.png"
    image.write_bytes(png_bytes())
    result = vlserve("chat", "what is in this picture?", "--image", str(image), "--max-tokens", "4",
                     "--server", local_server.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_chat_streaming_through_the_upstream_gateway(upstream_server):
    result = vlserve("chat", "hello", "--stream", "--max-tokens", "4", "--server", upstream_server.url)
    assert result.returncode == 0, result.stderr


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", [("chat", "hello"), ("gpu",)])
def test_an_unreachable_server_is_one_line_naming_it(command):
    result = vlserve(*command, "--server", "http://127.0.0.1:9")
    assert result.returncode == 1
    line = one_line(result)
    assert "cannot reach a server at http://127.0.0.1:9" in line and "vlserve serve" in line


@pytest.mark.parametrize("command", [("chat", "hello"), ("gpu",)])
def test_a_keyed_server_says_how_to_give_the_key(secured, command):
    result = vlserve(*command, "--server", secured.url)
    assert result.returncode == 1 and "--api-key" in one_line(result) and "VLSERVE_API_KEY" in one_line(result)
    wrong = vlserve(*command, "--server", secured.url, "--api-key", "sk-wrong")
    assert wrong.returncode == 1 and "refused" in one_line(wrong)
    right = vlserve(*command, "--server", secured.url, "--max-tokens" if command[0] == "chat" else "--json",
                    *(["3"] if command[0] == "chat" else []), env={"VLSERVE_API_KEY": KEYS[0]})
    assert right.returncode == 0, right.stderr


@pytest.mark.parametrize("command", [("chat", "hello"), ("gpu",)])
def test_a_wrong_url_says_so(local_server, command):
    result = vlserve(*command, "--server", f"{local_server.url}/v1")
    assert result.returncode == 1 and "404" in one_line(result) and "--server" in one_line(result)


def test_a_file_that_is_not_an_image_is_named_as_a_path(tmp_path):
    notes = tmp_path / "notes.py"
    notes.write_text("print('hi')\n")
    for path, message in [(notes, "not an image file"), (tmp_path / "gone.png", "no such file")]:
        result = vlserve("chat", "what?", "--image", str(path), "--server", "http://127.0.0.1:9")
        assert result.returncode == 1 and one_line(result) == f"vlserve chat: {path}: {message}" + \
            (" that can be read" if message == "not an image file" else "")


def test_the_default_server_is_on_port(local_server):
    result = vlserve("chat", "hello", "--max-tokens", "3", env={"PORT": str(local_server.url.rsplit(":", 1)[1]),
                                                                 "VLSERVE_URL": ""})
    assert result.returncode == 0, result.stderr


def test_healthcheck_asks_the_servers_own_port(local_server):
    assert vlserve("healthcheck", env={"PORT": local_server.url.rsplit(":", 1)[1]}).returncode == 0


def test_healthcheck_sends_a_key_when_health_needs_one(tmp_path):
    upstream = ScriptedUpstream("hello").start()
    env = {"UPSTREAM_BASE_URL": upstream.url, "API_KEYS": KEYS[0], "AUTH_OPEN_OPS": "false"}
    server = ServerProcess(env, tmp_path, "closed-ops").start().wait_listening()
    try:
        keyed = {"Authorization": f"Bearer {KEYS[0]}"}
        assert eventually(lambda: httpx.get(f"{server.url}/health", headers=keyed).status_code == 200)
        same_settings = {**env, "PORT": str(server.port)}
        assert vlserve("healthcheck", env=same_settings).returncode == 0
        refused = vlserve("healthcheck", env={**same_settings, "API_KEYS": "sk-not-its-key"})
        assert refused.returncode == 1 and "answered 401" in one_line(refused)
    finally:
        server.stop()


def test_healthcheck_of_nothing_fails_naming_the_address():
    result = vlserve("healthcheck", env={"PORT": "9"})
    assert result.returncode == 1
    assert one_line(result).startswith("vlserve healthcheck: no answer from http://127.0.0.1:9/health")


def test_gpu_table_without_a_gpu():
    result = vlserve("gpu")
    assert result.returncode == 0 and "No GPU" in result.stdout


def test_gpu_table_of_a_running_server(local_server):
    result = vlserve("gpu", "--server", local_server.url)
    assert result.returncode == 0 and "No GPU" in result.stdout and local_server.url in result.stdout


@pytest.mark.parametrize("value, message", [
    ("/nonexistent/model", "no such folder, and not a hub id"),
    ("not a hub id", "no such folder, and not a hub id"),
])
def test_a_model_path_that_cannot_be_a_model_stops_the_service(value, message):
    result = vlserve("serve", env={"MODEL_PATH": value, "PORT": "9"}, timeout=60)
    assert result.returncode == 2 and message in one_line(result) and "MODEL_PATH" in one_line(result)


def test_a_folder_without_a_checkpoint_stops_the_service(tmp_path):
    result = vlserve("serve", env={"MODEL_PATH": str(tmp_path), "PORT": "9"}, timeout=60)
    assert result.returncode == 2 and "no config.json" in one_line(result)


def test_gpu_json_from_a_running_server(local_server):
    result = vlserve("gpu", "--json", "--server", local_server.url)
    assert result.returncode == 0 and '"available": false' in result.stdout


def test_bad_setting_fails_at_start_with_one_line():
    result = vlserve("serve", env={"MAX_MODEL_LEN": "lots"}, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "vlserve: invalid setting MAX_MODEL_LEN='lots': Input should be a valid integer, unable to parse string as an integer"]


def test_tiny_model_command(tmp_path):
    result = vlserve("tiny-model", str(tmp_path / "tiny"), "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tiny" / "model.safetensors").is_file()


def test_origin_test_scripts(local_server, tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes((128, 96)))
    env = {"VLSERVE_URL": local_server.url}
    assert run(sys.executable, "scripts/test_api.py", "--max-tokens", "4", env=env).returncode == 0
    assert run(sys.executable, "scripts/test_api.py", "--image", str(image), "--max-tokens", "4", env=env).returncode == 0
    advanced = run(sys.executable, "scripts/test_api_advanced.py", "--image", str(image), env=env, timeout=300)
    assert advanced.returncode == 0, advanced.stdout + advanced.stderr
    assert advanced.stdout.strip().splitlines()[-1] == "11 passed, 0 failed"


def test_bench_against_the_tiny_model(local_server, tmp_path):
    out = tmp_path / "bench.json"
    result = vlserve("bench", "--server", local_server.url, "--requests", "4", "--concurrency", "2",
                     "--max-tokens", "8", "--ignore-eos", "--image-size", "320x240", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "TTFT ms" in result.stdout and "inter-token ms" in result.stdout
    import json

    summary = json.loads(out.read_text())
    assert summary["ok"] == 4 and summary["errors"] == {} and summary["output_tokens_per_request"] == 8
    assert summary["ttft_ms"]["p50"] > 0 and summary["itl_ms"]["p50"] > 0


def test_bench_reports_errors_and_bad_arguments(secured):
    result = vlserve("bench", "--server", secured.url, "--requests", "2", "--model", "qwen3-vl-tiny-random")
    assert result.returncode == 1 and "2 of 2 requests failed: 2 × HTTP 401" in one_line(result)
    bad = vlserve("bench", "--server", secured.url, "--image-size", "big")
    assert bad.returncode == 2 and "WIDTHxHEIGHT" in bad.stderr
