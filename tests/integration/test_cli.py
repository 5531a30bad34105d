"""The `vlserve` command and the origin design's test scripts, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import png_bytes

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


def test_chat_reports_an_unreachable_server(tmp_path):
    result = vlserve("chat", "hello", "--server", "http://127.0.0.1:9")
    assert result.returncode == 1 and "vlserve chat:" in result.stderr


def test_gpu_table_without_a_gpu():
    result = vlserve("gpu")
    assert result.returncode == 0 and "No GPU" in result.stdout


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
    assert run(sys.executable, "test_api.py", "--max-tokens", "4", env=env).returncode == 0
    assert run(sys.executable, "test_api.py", "--image", str(image), "--max-tokens", "4", env=env).returncode == 0
    advanced = run(sys.executable, "test_api_advanced.py", "--image", str(image), env=env, timeout=300)
    assert advanced.returncode == 0, advanced.stdout + advanced.stderr
    assert advanced.stdout.strip().splitlines()[-1] == "11 passed, 0 failed"
