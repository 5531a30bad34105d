"""What an engine receives: data URLs only, the pixel budget in the engine's own form."""

from __future__ import annotations

import asyncio
import base64

from vlserve.chat_input import build_chat_request
from vlserve.config import Settings
from vlserve.media import MediaNormalizer, MediaPolicy
from vlserve.schemas import ChatCompletionRequest

from .media_helpers import png


def build(body: dict, **settings_overrides) -> dict:
    settings = Settings(**settings_overrides)
    media = MediaNormalizer(MediaPolicy.from_settings(settings))
    return asyncio.run(build_chat_request(ChatCompletionRequest(**body), "engine-id", settings, media))


BODY = {"model": "alias", "messages": [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": base64.b64encode(png()).decode(), "max_pixels": 200_000}},
    {"type": "text", "text": "hi"}]}], "temperature": 0.1}


def test_images_become_data_urls_and_hints_are_consumed():
    request = build(BODY)
    part = request["messages"][0]["content"][0]
    assert part == {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png()).decode()}}
    assert request["model"] == "engine-id"
    assert request["temperature"] == 0.1 and request["top_p"] == 0.8 and request["max_tokens"] == 1024


def test_upstreams_get_the_pixel_budget_in_lmdeploys_form():
    request = build(BODY, LMDEPLOY_BASE_URL="http://engine:23333")
    assert request["mm_processor_kwargs"] == {"image": {"min_pixels": 65_536, "max_pixels": 200_000}}


def test_flat_form_and_off():
    flat = build(BODY, LMDEPLOY_BASE_URL="http://engine:23333", UPSTREAM_MM_KWARGS="flat")
    assert flat["mm_processor_kwargs"] == {"min_pixels": 65_536, "max_pixels": 200_000}
    assert "mm_processor_kwargs" not in build(BODY, LMDEPLOY_BASE_URL="http://e:1", UPSTREAM_MM_KWARGS="off")


def test_the_local_engine_and_text_only_requests_get_none():
    assert "mm_processor_kwargs" not in build(BODY)
    text_only = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert "mm_processor_kwargs" not in build(text_only, LMDEPLOY_BASE_URL="http://engine:23333")
