"""What an engine receives: data URLs only, the pixel budget in the engine's own form.

The builder is the same for every route; the dialect (how the budget is spelled) is the
upstream engine's, applied per replica.
"""

from __future__ import annotations

import asyncio
import base64

from tests.media_helpers import png
from vlserve.config import Settings
from vlserve.engines.base import EngineStatus
from vlserve.engines.upstream.dialect import UpstreamDialect
from vlserve.engines.upstream.replicas import Replica
from vlserve.gateway.catalog import ModelCatalog
from vlserve.gateway.request_builder import RequestBuilder
from vlserve.gateway.schemas import ChatCompletionRequest
from vlserve.media import MediaNormalizer, MediaPolicy


class OneModel:
    """An engine that is ready and serves one model (the builder asks it for ids)."""

    def status(self) -> EngineStatus:
        return EngineStatus(True, "ready", ["engine-id"])


def builder(settings: Settings) -> RequestBuilder:
    return RequestBuilder(settings, ModelCatalog(settings, OneModel()), MediaNormalizer(MediaPolicy.from_settings(settings)))


def build(body: dict, **settings_overrides) -> dict:
    """What an upstream replica is sent for `body` (the local engine reads `body` as built)."""
    settings = Settings(**settings_overrides)
    request = asyncio.run(builder(settings).from_chat(ChatCompletionRequest(**body)))
    if settings.engine_kind == "local":
        return request.body
    dialect = UpstreamDialect(settings.upstream_mm_kwargs, settings.upstream_guided_decoding)
    return dialect.body_for(request, Replica("http://engine:23333"))[0]


BODY = {"model": "engine-id", "messages": [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": base64.b64encode(png()).decode(), "max_pixels": 200_000}},
    {"type": "text", "text": "hi"}]}], "temperature": 0.1}


def test_images_become_data_urls_and_hints_are_consumed():
    request = build(BODY)
    part = request["messages"][0]["content"][0]
    assert part == {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png()).decode()}}
    assert request["model"] == "engine-id"
    assert request["temperature"] == 0.1 and request["top_p"] == 0.8 and request["max_tokens"] == 1024


def test_upstreams_get_the_pixel_budget_in_lmdeploys_form():
    request = build(BODY, UPSTREAM_BASE_URL="http://engine:23333")
    # Both forms: LMDeploy up to 0.12 reads the top level, from 0.13 the "image" entry.
    bounds = {"min_pixels": 65_536, "max_pixels": 200_000}
    assert request["mm_processor_kwargs"] == {"image": bounds, **bounds}


def test_flat_form_and_off():
    flat = build(BODY, UPSTREAM_BASE_URL="http://engine:23333", UPSTREAM_MM_KWARGS="flat")
    assert flat["mm_processor_kwargs"] == {"min_pixels": 65_536, "max_pixels": 200_000}
    assert "mm_processor_kwargs" not in build(BODY, UPSTREAM_BASE_URL="http://e:1", UPSTREAM_MM_KWARGS="off")


def test_the_local_engine_and_text_only_requests_get_none():
    assert "mm_processor_kwargs" not in build(BODY)
    text_only = {"model": "engine-id", "messages": [{"role": "user", "content": "hi"}]}
    assert "mm_processor_kwargs" not in build(text_only, UPSTREAM_BASE_URL="http://engine:23333")


def test_infer_and_analyze_requests_carry_the_budget_their_images_were_prepared_for():
    settings = Settings(UPSTREAM_BASE_URL="http://engine:23333", MEDIA_IMAGE_MAX_PIXELS="300000")
    made = builder(settings)
    image = asyncio.run(made.media.image(base64.b64encode(png()).decode()))
    request = made.simple(prompt="hi", images=[image], system_prompt=None, model=None, sampling={})
    assert request.model == "engine-id" and request.image_pixels == (65_536, 300_000)
    sent, added = UpstreamDialect("lmdeploy", True).body_for(request, Replica("http://engine:23333"))
    bounds = {"min_pixels": 65_536, "max_pixels": 300_000}
    assert sent["mm_processor_kwargs"] == {"image": bounds, **bounds}
    assert added == ["mm_processor_kwargs"]
    assert "mm_processor_kwargs" not in request.body  # the client's request is not changed


def test_a_refused_optional_field_is_learned_per_replica():
    from vlserve.errors import ErrorKind, ServiceError

    settings = Settings(UPSTREAM_BASE_URL="http://engine:23333", UPSTREAM_MM_KWARGS="flat")
    request = asyncio.run(builder(settings).from_chat(ChatCompletionRequest(**BODY)))
    dialect, vllm, other = UpstreamDialect("flat", True), Replica("http://vllm"), Replica("http://other")
    _, added = dialect.body_for(request, vllm)
    refusal = ServiceError(ErrorKind.BAD_REQUEST, "Per-request mm_processor_kwargs are disabled by default; "
                           "start the server with --trust-request-mm-kwargs")
    unrelated = ServiceError(ErrorKind.BAD_REQUEST, "messages: Field required")
    assert not dialect.refused(vllm, added, unrelated)  # a real client error is not "learned"
    assert dialect.refused(vllm, added, refusal)
    assert "mm_processor_kwargs" not in dialect.body_for(request, vllm)[0]
    assert "mm_processor_kwargs" in dialect.body_for(request, other)[0]  # learned for that replica only


def test_images_outside_user_messages_are_a_400_that_says_where_they_go():
    from vlserve.errors import ServiceError

    image = {"type": "image_url", "image_url": {"url": base64.b64encode(png()).decode()}}
    for role in ("system", "assistant", "developer"):
        body = {"model": "engine-id", "messages": [{"role": role, "content": [image]},
                                                   {"role": "user", "content": "hi"}]}
        try:
            build(body)
        except ServiceError as exc:
            assert exc.status == 400 and "only be sent in user messages" in exc.message
            assert exc.param == "messages.0.content"
        else:
            raise AssertionError(f"an image in a {role} message was accepted")
