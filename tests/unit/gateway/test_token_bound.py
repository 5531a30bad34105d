"""The token bound a key's tokens-per-minute limit reserves is never below what Qwen3-VL's
own processor counts: byte-level BPE (a token is at least a byte), the chat template's
tokens, and each image's tokens at its pixel budget."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from vlserve.gateway.token_bound import token_bound, visual_kinds

TEXTS = ["hi", "Describe the picture in detail, please.", "日本語のテキストを読む。", "emoji 🙂🐈‍⬛ and ümlauts",
         " ".join(["word"] * 500), "x" * 3000]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city, now.",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string", "description": "Its name"}}}}}]


def counted(processor, messages, tools=None, images=()) -> int:
    text = processor.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=list(images) or None, return_tensors="pt")
    return int(inputs["input_ids"].shape[1])


@pytest.mark.parametrize("text", TEXTS)
def test_a_text_prompt_never_needs_more_than_its_bound(processor, text):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text},
                {"role": "assistant", "content": "Sure."}, {"role": "user", "content": text[::-1]}]
    body = {"model": "m", "messages": messages, "max_tokens": 100}
    assert token_bound(body, "chat", visuals=0, tokens_per_visual=0, context=1_000_000) >= counted(
        processor, messages) + 100


def test_tool_definitions_are_in_the_bound(processor):
    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    body = {"model": "m", "messages": messages, "tools": TOOLS, "max_tokens": 1}
    needed = counted(processor, messages, tools=TOOLS)
    assert needed > counted(processor, messages) + len(json.dumps(TOOLS)) // 8  # the tools do weigh
    assert token_bound(body, "chat", visuals=0, tokens_per_visual=0, context=1_000_000) >= needed + 1


def test_an_image_at_its_budget_is_in_the_bound(processor):
    budget = 1280 * 32 * 32  # MEDIA_IMAGE_MAX_PIXELS, the default
    image = Image.new("RGB", (1280, 1024))  # 1,310,720 pixels: exactly the budget, at factor 32
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 5000}},
        {"type": "text", "text": "What is it?"}]}]}
    assert visual_kinds(body) == ["image_url"]
    bound = token_bound(body, "chat", visuals=1, tokens_per_visual=budget // 32**2 + 2, context=1_000_000)
    assert bound >= counted(processor, messages, images=[image]) + 10
    assert bound < 2000  # the data URL's base64 is not counted as text


def test_the_bound_never_passes_the_context():
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 10_000}], "max_tokens": 100}
    assert token_bound(body, "chat", visuals=0, tokens_per_visual=0, context=8192) == 8192
    assert token_bound({"model": "m", "prompt": "abc", "max_tokens": 5}, "text", visuals=0, tokens_per_visual=0,
                       context=8192) == len('"abc"') + 32 + 5
