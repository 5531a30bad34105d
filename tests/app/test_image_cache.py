"""The image cache seen from the routes: every route shares it, a conversation that sends
its photo again each turn reaches the engine with the same bytes, and /metrics counts it."""

from __future__ import annotations

import base64
import re

from ..media_helpers import photo
from ..scripted_engine import ScriptedEngine
from .conftest import AppClient

PHOTO = "data:image/jpeg;base64," + base64.b64encode(photo((2400, 1600))).decode()


def image_sent(engine: ScriptedEngine) -> str:
    parts = [part for message in engine.requests[-1].body["messages"] if isinstance(message["content"], list)
             for part in message["content"] if part["type"] == "image_url"]
    return parts[0]["image_url"]["url"]


def cache_metrics(text: str) -> dict[str, float]:
    return {name: float(value) for name, value in
            re.findall(r'^(vlserve_image_cache_\w+(?:\{result="\w+"\})?) (\S+)$', text, re.M)}


async def test_a_conversation_about_one_photo_sends_the_same_bytes_each_turn(app_client: AppClient,
                                                                             engine: ScriptedEngine):
    async with app_client() as client:
        turn = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": PHOTO}},
                                            {"type": "text", "text": "What is it?"}]}
        messages: list[dict] = [turn]
        sent = []
        for _ in range(3):
            resp = await client.post("/v1/chat/completions", json={"model": "scripted", "messages": messages})
            assert resp.status_code == 200, resp.text
            sent.append(image_sent(engine))
            messages += [{"role": "assistant", "content": resp.json()["choices"][0]["message"]["content"]},
                         {"role": "user", "content": "And then?"}]
        analyzed = await client.post("/analyze", json={"task": "caption", "image": PHOTO})
        assert analyzed.status_code == 200, analyzed.text
        sent.append(image_sent(engine))
        metrics = cache_metrics((await client.get("/metrics")).text)
    assert len(set(sent)) == 1 and sent[0] != PHOTO  # shrunk once, the same bytes every time after
    assert metrics['vlserve_image_cache_lookups_total{result="miss"}'] == 1
    assert metrics['vlserve_image_cache_lookups_total{result="hit"}'] == 3
    assert metrics["vlserve_image_cache_entries"] == 1 and metrics["vlserve_image_cache_bytes"] > len(sent[0])


async def test_off_with_media_cache_bytes_zero(app_client: AppClient, engine: ScriptedEngine):
    async with app_client(MEDIA_CACHE_BYTES="0") as client:
        body = {"model": "scripted", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": PHOTO}}]}]}
        for _ in range(2):
            assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
        metrics = cache_metrics((await client.get("/metrics")).text)
    assert metrics['vlserve_image_cache_lookups_total{result="hit"}'] == 0
    assert metrics["vlserve_image_cache_entries"] == 0
