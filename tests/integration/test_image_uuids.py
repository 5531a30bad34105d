"""Images reach the engine as the same bytes under the same name, from any gateway.

vLLM keys its processor, encoder and prefix caches on a part's `uuid` when a client names
an image (vllm/entrypoints/chat_utils.py); its caches, and LMDeploy's prefix cache (keyed
on the preprocessed image), only hit when the same image arrives as the same bytes. Two
real gateway processes in front of one stand-in engine that says it is vLLM, and one in
front of an engine that says it is LMDeploy.
"""

from __future__ import annotations

import base64

import httpx
import pytest

from ..media_helpers import photo
from ..scripted_upstream import ScriptedUpstream
from ..servers import ServerProcess
from .conftest import TEST_MEDIA_ENV

PHOTO = base64.b64encode(photo((2400, 1600))).decode()  # over the budget: shrunk by the gateway
OTHER = base64.b64encode(photo((2400, 1600))).decode()  # noise: another image


@pytest.fixture(scope="module")
def engines():
    return {"vllm": ScriptedUpstream("ok", owned_by="vllm").start(),
            "lmdeploy": ScriptedUpstream("ok", owned_by="lmdeploy").start()}


@pytest.fixture(scope="module")
def gateways(engines, tmp_path_factory):
    logs = tmp_path_factory.mktemp("uuids")
    servers = [ServerProcess({"UPSTREAM_BASE_URL": engines[kind].url, **TEST_MEDIA_ENV},
                             logs, name).start() for name, kind in
               (("first", "vllm"), ("second", "vllm"), ("lmdeploy", "lmdeploy"))]
    try:
        yield [server.wait_healthy() for server in servers]
    finally:
        for server in servers:
            server.stop()


def ask(gateway: ServerProcess, image: str, **part: object) -> None:
    content = [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + image}, **part},
               {"type": "text", "text": "What is it?"}]
    resp = httpx.post(f"{gateway.url}/v1/chat/completions", timeout=60,
                      json={"model": "scripted", "messages": [{"role": "user", "content": content}]})
    assert resp.status_code == 200, resp.text


def sent_part(engine: ScriptedUpstream) -> dict:
    return engine.requests[-1]["messages"][0]["content"][0]


def test_the_same_image_has_the_same_bytes_and_name_from_every_gateway(engines, gateways):
    first, second, _ = gateways
    vllm = engines["vllm"]
    ask(first, PHOTO)
    from_first = sent_part(vllm)
    ask(second, PHOTO)
    from_second = sent_part(vllm)
    ask(first, PHOTO)
    again = sent_part(vllm)
    assert from_first["image_url"]["url"] == from_second["image_url"]["url"] == again["image_url"]["url"]
    assert len(from_first["uuid"]) == 64 and from_first["uuid"] == from_second["uuid"] == again["uuid"]
    ask(first, OTHER)
    assert sent_part(vllm)["uuid"] != from_first["uuid"]


def test_a_client_cannot_name_an_image(engines, gateways):
    first, _, lmdeploy_gateway = gateways
    ask(first, PHOTO)
    named = sent_part(engines["vllm"])["uuid"]
    ask(first, OTHER, uuid=named)  # claiming the first photo's name for another image
    assert sent_part(engines["vllm"])["uuid"] != named
    ask(lmdeploy_gateway, OTHER, uuid=named)
    assert "uuid" not in sent_part(engines["lmdeploy"])


def test_engines_that_do_not_say_they_are_vllm_get_no_names(engines, gateways):
    ask(gateways[2], PHOTO)
    part = sent_part(engines["lmdeploy"])
    assert "uuid" not in part and part["image_url"]["url"].startswith("data:image/jpeg;base64,")
