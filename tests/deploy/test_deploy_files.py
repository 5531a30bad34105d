"""The deployment files: linted and validated as CI can (no Docker engine or cluster here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from vlserve.config import Settings

DEPLOY = Path(__file__).parents[2] / "deploy"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} is not installed (it comes with the [test] extra)"
    return path


def test_dockerfile_passes_hadolint():
    result = subprocess.run([tool("hadolint"), "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_manifests_validate_strictly():
    files = sorted(str(p) for p in (DEPLOY / "k8s").glob("*.yaml"))
    result = subprocess.run([tool("kubernetes-validate"), "--strict", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(files)


def test_entrypoint_is_one_exec_of_the_launcher():
    entrypoint = DEPLOY / "entrypoint.sh"
    lines = [line for line in entrypoint.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines == ['exec vlserve launch "$@"'] and os.access(entrypoint, os.X_OK)


def test_image_environment_uses_real_settings():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    env_block = dockerfile.split("# Settings (README")[1].split("USER")[0]
    names = set(re.findall(r"^\s+([A-Z][A-Z0-9_]+)=", env_block, re.M)) - {"HF_HUB_OFFLINE"}
    assert names and names <= set(Settings.env_names())
    assert "pyproject.toml" in dockerfile and "uv pip install /src/vlserve" in dockerfile


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def test_compose_for_four_gpus():
    service = load("compose.yaml")["services"]["vlserve"]
    assert service["ports"] == ["20000:8000"]
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 4
    assert service["environment"]["TENSOR_PARALLEL_SIZE"] == "4"
    assert service["restart"] and service["shm_size"] and service["healthcheck"]["test"] == ["CMD", "vlserve", "healthcheck"]
    assert set(service["environment"]) <= set(Settings.env_names())


def test_compose_replicas_behind_one_gateway():
    services = load("compose.replicas.yaml")["services"]
    replicas = sorted(name for name in services if name.startswith("replica"))
    urls = services["gateway"]["environment"]["UPSTREAM_BASE_URL"].split(",")
    assert urls == [f"http://{name}:8000" for name in replicas]
    for name in replicas:
        assert services[name]["environment"]["TENSOR_PARALLEL_SIZE"] == "1"
        assert len(services[name]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]) == 1


def test_deployment_probes_and_gpus():
    deployment = load("k8s/deployment.yaml")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    assert {e["name"] for e in container["env"]} <= set(Settings.env_names())


def test_compose_shared_gateways_use_one_redis_and_one_key_file():
    services = load("compose.shared.yaml")["services"]
    gateways = [services[name] for name in ("gateway-a", "gateway-b")]
    for gateway in gateways:
        env = gateway["environment"]
        assert env["REDIS_URL"] == "redis://redis:6379/0" and env["UPSTREAM_BASE_URL"] == "http://engine:8000"
        assert env["API_KEYS_FILE"] == "/etc/vlserve/keys.toml" and set(env) <= set(Settings.env_names())
        assert gateway["volumes"] == ["./keys.toml:/etc/vlserve/keys.toml:ro"]
    assert {gateway["ports"][0].split(":")[0] for gateway in gateways} == {"20000", "20001"}
    assert services["redis"]["image"].startswith("redis:")
