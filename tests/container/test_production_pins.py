"""The production image's engine pins, resolved as its build would resolve them.

Its CUDA base and torch's CUDA index cannot be reached here, so the production image is
not built in CI. What can go wrong without a GPU can still be caught: the Dockerfile's
default versions of torch, LMDeploy, triton and transformers, with the gateway itself,
must resolve together for the image's Python and platform. The resolver is the image's
own uv, reading PyPI (where torch has the same version, built for another CUDA).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .docker import IMAGE, docker

pytestmark = pytest.mark.timeout(300)

DOCKERFILE = Path(__file__).parents[2] / "deploy" / "Dockerfile"
CA = "/etc/ssl/certs/ca-certificates.crt"


def dockerfile_defaults() -> dict[str, str]:
    return dict(re.findall(r"^ARG ([A-Z_]+)=(\S+)$", DOCKERFILE.read_text(), re.M))


def test_the_production_engine_pins_resolve_with_the_gateway():
    args = dockerfile_defaults()
    wanted = {"torch": args["TORCH_VERSION"], "lmdeploy": args["LMDEPLOY_VERSION"],
              "triton": args["TRITON_VERSION"], "transformers": args["TRANSFORMERS_VERSION"]}
    assert wanted == {"torch": "2.5.1", "lmdeploy": "0.11.1", "triton": "3.1.0", "transformers": "4.57.6"}
    requirements = "".join(f"{name}=={version}\n" for name, version in wanted.items()) + "/src/vlserve\n"
    result = docker("run", "--rm", "-i", "--network", "host", "-v", f"{CA}:/ca.crt:ro", "-e", "SSL_CERT_FILE=/ca.crt",
                    "--entrypoint", "uv", IMAGE, "pip", "compile", "--no-header", "--python-version",
                    args["PYTHON_VERSION"], "--python-platform", "x86_64-manylinux_2_28", "-",
                    input=requirements, timeout=240)
    resolved = dict(re.findall(r"^([a-z0-9_.-]+)==(\S+)$", result.stdout, re.M))
    assert {name: resolved.get(name) for name in wanted} == wanted, result.stdout
    assert re.search(r"^/src/vlserve$", result.stdout, re.M) and "# via vlserve" in result.stdout
