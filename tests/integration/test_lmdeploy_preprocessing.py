"""LMDeploy's own Qwen3-VL preprocessing, run on the body vlserve sends: the image tokens
each release gives the model are the pixel budget's.

0.11.1 (the first real deployment's) reads `mm_processor_kwargs` at the top level, 0.13
and later only under "image" (the releases between were read in their source: see
engines/upstream/dialect.py). The body is the same whatever the version (an upstream of
unknown version, or the one `vlserve launch` started), so one body is checked on both.
Needs .ci/lmdeploy_preprocessing.sh (run by .ci/run); without it the test is skipped,
except in CI.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.media_helpers import photo
from vlserve.config import Settings
from vlserve.engines.base import EngineRequest
from vlserve.engines.upstream.dialect import UpstreamDialect
from vlserve.engines.upstream.replicas import Replica
from vlserve.gateway.request_builder import pixel_bounds
from vlserve.media import MediaNormalizer, MediaPolicy, smart_resize

ROOT = Path(__file__).resolve().parents[2]
RELEASES = ROOT / ".cache" / "lmdeploy"
PROBE = ROOT / "tests" / "lmdeploy_preprocess.py"

pytestmark = [pytest.mark.contract, pytest.mark.timeout(300)]


def sent(size: tuple[int, int], settings: Settings) -> tuple[dict, tuple[int, int]]:
    """The image and mm_processor_kwargs an upstream is sent for a photo of `size`, and the
    grid (height, width in pixels) the budget gives it."""
    media = MediaNormalizer(MediaPolicy.from_settings(settings))
    image = asyncio.run(media.image_from_bytes(photo(size)))
    body = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image.data_url}}, {"type": "text", "text": "describe"}]}]}
    request = EngineRequest(body, image_pixels=pixel_bounds([image.budget]))
    out, _ = UpstreamDialect(settings.upstream_mm_kwargs, settings.upstream_guided_decoding).body_for(
        request, Replica("http://engine:23333"))
    return {"image": image.data_url, "mm_processor_kwargs": out["mm_processor_kwargs"]}, \
        smart_resize(image.height, image.width, image.budget)


def lmdeploy_tokens(version: str, model: Path, request: dict) -> dict:
    paths = [RELEASES / version, RELEASES / "deps"]
    if version.startswith("0.11."):
        paths.insert(1, RELEASES / "transformers4")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths)}
    result = subprocess.run([sys.executable, str(PROBE)], input=json.dumps({"model": str(model), **request}),
                            capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("version", ["0.11.1", "0.18.0"])
@pytest.mark.parametrize("size", [(1523, 1142), (4000, 3000)])  # 1.33x the budget (sent as is), and a 12 MP photo
def test_lmdeploy_gives_the_model_the_budgets_image_tokens(tiny_model_dir, version, size):
    if not (RELEASES / version / "lmdeploy").is_dir():
        pytest.skip(f"LMDeploy {version} is not in {RELEASES} (bash .ci/lmdeploy_preprocessing.sh)")
    settings = Settings(UPSTREAM_BASE_URL="http://engine:23333")  # the defaults: UPSTREAM_MM_KWARGS=lmdeploy
    request, (height, width) = sent(size, settings)
    got = lmdeploy_tokens(version, tiny_model_dir, request)
    assert got["version"] == version
    assert got["grid"] == [1, height // 16, width // 16]  # patches of 16 px (Qwen3-VL)
    assert got["image_tokens"] == height * width // (32 * 32) <= settings.media_image_max_pixels // (32 * 32)
