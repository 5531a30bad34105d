"""Retry smaller seen from the routes: which refusals are retried, the metric, the switch.
(tests/integration/test_retry_smaller.py has real engines' refusals through a real gateway.)"""

from __future__ import annotations

import base64
import re

import pytest

from vlserve.errors import ErrorKind, ServiceError

from ..media_helpers import photo
from ..scripted_engine import ScriptedEngine
from .conftest import AppClient

PHOTO = "data:image/jpeg;base64," + base64.b64encode(photo((1600, 1200))).decode()
BODY = {"model": "scripted", "messages": [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": PHOTO}}, {"type": "text", "text": "What is it?"}]}]}


def retries(metrics: str) -> float:
    return float(re.search(r"^vlserve_retries_with_smaller_images_total (\S+)$", metrics, re.M).group(1))


@pytest.mark.parametrize("refusal", [
    ServiceError(ErrorKind.CONTEXT_TOO_LONG, "The prompt is 5000 tokens."),
    ServiceError(ErrorKind.ENGINE_OUT_OF_MEMORY, "The engine ran out of memory for this request."),
    ServiceError(ErrorKind.BAD_REQUEST, "too long", code="context_length_exceeded"),  # an upstream's own code
])
async def test_a_prompt_the_engine_cannot_fit_is_sent_again_with_a_quarter_of_the_pixels(
        app_client: AppClient, engine: ScriptedEngine, refusal: ServiceError):
    engine.fail_once = refusal
    async with app_client() as client:
        resp = await client.post("/v1/chat/completions", json=BODY)
        metrics = (await client.get("/metrics")).text
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-vlserve-images-shrunk"] == "0.25"
    assert resp.json()["usage"]["images_shrunk"] == 0.25
    first, second = engine.requests
    assert second.image_pixels is not None and first.image_pixels is not None
    assert second.image_pixels[1] == first.image_pixels[1] // 4
    assert retries(metrics) == 1


@pytest.mark.parametrize("refusal", [
    ServiceError(ErrorKind.BAD_REQUEST, "The sampling settings were refused."),
    ServiceError(ErrorKind.ENGINE_UNAVAILABLE, "The engine is unreachable."),
])
async def test_other_refusals_are_not_retried(app_client: AppClient, engine: ScriptedEngine,
                                              refusal: ServiceError):
    engine.fail_once = refusal
    async with app_client() as client:
        resp = await client.post("/v1/chat/completions", json=BODY)
    assert resp.status_code == refusal.status and len(engine.requests) == 1


async def test_off_with_media_retry_smaller_false(app_client: AppClient, engine: ScriptedEngine):
    engine.fail_once = ServiceError(ErrorKind.CONTEXT_TOO_LONG, "The prompt is 5000 tokens.")
    async with app_client(MEDIA_RETRY_SMALLER="false") as client:
        resp = await client.post("/v1/chat/completions", json=BODY)
        metrics = (await client.get("/metrics")).text
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "context_length_exceeded"
    assert "x-vlserve-images-shrunk" not in resp.headers
    assert len(engine.requests) == 1 and retries(metrics) == 0
