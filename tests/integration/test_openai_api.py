"""The OpenAI API through real servers, with the official openai SDK and httpx.

Every test runs twice: against the gateway on the LocalEngine, and against a gateway on
the UpstreamEngine whose upstream is that first server. The model is random, so tests
assert shapes, token accounting and errors, not words.
"""

from __future__ import annotations

import base64
import json

import httpx
import openai
import pytest

from .conftest import png_bytes

MODEL = "tiny"


def client_for(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def data_url(data: bytes, mime="image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def expected_prompt_tokens(processor, messages, images=(), max_pixels=None) -> int:
    """What the model's own processor counts for these messages (images included).

    `max_pixels` gives the processor the gateway's pixel budget instead of the checkpoint's.
    """
    import io

    from PIL import Image

    template_messages = [
        {"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else
         [{"type": "image"} if p["type"] == "image_url" else p for p in m["content"]]}
        for m in messages
    ]
    text = processor.apply_chat_template(template_messages, tokenize=False, add_generation_prompt=True)
    pil = [Image.open(io.BytesIO(i)).convert("RGB") for i in images]
    kwargs = {"size": {"shortest_edge": 65536, "longest_edge": max_pixels}} if max_pixels else {}
    return int(processor(text=[text], images=pil or None, return_tensors="pt", **kwargs)["input_ids"].shape[1])


def test_models_list(gateway):
    ids = [m.id for m in client_for(gateway).models.list().data]
    assert MODEL in ids


def test_upstream_gateway_accepts_its_alias(upstream_server):
    client = client_for(upstream_server)
    assert [m.id for m in client.models.list().data] == ["alias-model", MODEL]
    reply = client.chat.completions.create(model="alias-model", max_tokens=3,
                                           messages=[{"role": "user", "content": "hi"}])
    assert reply.model == MODEL  # rewritten to the upstream's own id


def test_text_chat_counts_tokens_like_the_tokenizer(gateway, processor):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]
    reply = client_for(gateway).chat.completions.create(model=MODEL, messages=messages, max_tokens=7)
    assert reply.object == "chat.completion"
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.usage.prompt_tokens == expected_prompt_tokens(processor, messages)
    assert reply.choices[0].finish_reason in ("length", "stop")
    if reply.choices[0].finish_reason == "length":
        assert reply.usage.completion_tokens == 7
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


@pytest.mark.parametrize("form", ["data_url", "raw_base64", "raw_base64_unpadded", "http_url"])
def test_one_image_in_every_form(gateway, processor, image_server, form):
    png = png_bytes((96, 80))
    url = {
        "data_url": data_url(png),
        "raw_base64": base64.b64encode(png).decode(),
        "raw_base64_unpadded": base64.b64encode(png).decode().rstrip("="),
        "http_url": f"{image_server}/red.png",
    }[form]
    if form == "http_url":
        png = png_bytes()
    messages = [{"role": "user", "content": [image_part(url), {"type": "text", "text": "What is this?"}]}]
    reply = client_for(gateway).chat.completions.create(model=MODEL, messages=messages, max_tokens=3)
    # The image's tokens are in the prompt: the engine really saw the picture.
    assert reply.usage.prompt_tokens == expected_prompt_tokens(processor, messages, [png])
    assert reply.usage.prompt_tokens > 50


def test_two_images(gateway, processor):
    a, b = png_bytes((64, 64)), png_bytes((300, 200), (0, 0, 255))
    messages = [{"role": "user", "content": [image_part(data_url(a)), image_part(data_url(b)),
                                             {"type": "text", "text": "Compare."}]}]
    reply = client_for(gateway).chat.completions.create(model=MODEL, messages=messages, max_tokens=3)
    assert reply.usage.prompt_tokens == expected_prompt_tokens(processor, messages, [a, b])


@pytest.mark.parametrize("detail, max_pixels", [(None, 1280 * 32 * 32), ("low", 256 * 32 * 32)])
def test_a_large_photo_costs_only_the_pixel_budget(gateway, processor, detail, max_pixels):
    from .conftest import jpeg_bytes
    photo = jpeg_bytes((2400, 1800))
    part = image_part(data_url(photo, "image/jpeg"))
    if detail:
        part["image_url"]["detail"] = detail
    messages = [{"role": "user", "content": [part, {"type": "text", "text": "Describe."}]}]
    reply = client_for(gateway).chat.completions.create(model=MODEL, messages=messages, max_tokens=2)
    # Downscaled by the gateway to exactly what the processor makes of it under that budget,
    # not the ~4,200 tokens the checkpoint's own 16.7 MP budget would spend.
    assert reply.usage.prompt_tokens == expected_prompt_tokens(processor, messages, [photo], max_pixels)
    assert reply.usage.prompt_tokens <= max_pixels // 1024 + 30


def test_stream_with_usage(gateway, processor):
    messages = [{"role": "user", "content": [image_part(data_url(png_bytes())), {"type": "text", "text": "Hi"}]}]
    stream = client_for(gateway).chat.completions.create(
        model=MODEL, messages=messages, max_tokens=6, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.prompt_tokens == expected_prompt_tokens(processor, messages, [png_bytes()])
    assert 1 <= usage.completion_tokens <= 6


def test_streamed_text_is_the_same_answer_as_a_whole_one(gateway):
    client = client_for(gateway)
    args = dict(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=12, temperature=0)
    whole = client.chat.completions.create(**args).choices[0].message.content
    chunks = client.chat.completions.create(**args, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole


def test_sse_framing(gateway):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(resp.iter_bytes())
    events = [e for e in raw.split(b"\n\n") if e.strip()]
    assert all(e.startswith(b"data: ") for e in events)
    assert events[-1] == b"data: [DONE]"
    for event in events[:-1]:
        assert "usage" not in json.loads(event[6:]) or json.loads(event[6:])["usage"] is None


def test_greedy_with_seed_is_repeatable(gateway):
    client = client_for(gateway)
    args = dict(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0)
    assert client.chat.completions.create(**args).choices[0].message.content == \
        client.chat.completions.create(**args).choices[0].message.content


def test_same_seed_same_sample(gateway):
    client = client_for(gateway)
    args = dict(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=10, temperature=1.0)
    first = client.chat.completions.create(**args, seed=1234).choices[0].message.content
    assert client.chat.completions.create(**args, seed=1234).choices[0].message.content == first
    others = {client.chat.completions.create(**args, seed=s).choices[0].message.content for s in (1, 2, 3)}
    assert others != {first}  # the seed really drives sampling


@pytest.mark.parametrize("extreme", [{"temperature": 1e-300}, {"repetition_penalty": 0.001}, {"top_p": 1e-300}])
def test_extreme_sampling_values_never_crash(gateway, extreme):
    # Found by schemathesis: a vanishing temperature or penalty overflowed to inf inside generate().
    resp = post_chat(gateway, {"model": MODEL, "max_tokens": 3, "messages": [{"role": "user", "content": "x"}],
                               **extreme})
    assert resp.status_code in (200, 400), resp.text
    assert httpx.get(f"{gateway.url}/health", timeout=10).status_code == 200


def test_prompt_longer_than_the_context_is_400(gateway):
    resp = post_chat(gateway, {"model": MODEL, "max_tokens": 5,
                               "messages": [{"role": "user", "content": "alpha beta gamma " * 2000}]})
    assert resp.status_code == 400
    error = error_of(resp)
    # Through the upstream gateway too: an upstream's own OpenAI code is kept.
    assert error["code"] == "context_length_exceeded" and "4096" in error["message"]
    assert error["param"] == "messages"
    assert httpx.get(f"{gateway.url}/health", timeout=10).status_code == 200


def test_stop_string_cuts_the_answer(gateway):
    client = client_for(gateway)
    args = dict(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=12, temperature=0)
    full = client.chat.completions.create(**args).choices[0].message.content
    stop = full.strip()[2:4]
    assume = stop and stop in full
    if not assume:
        pytest.skip("greedy output too short to pick a stop string")
    cut = client.chat.completions.create(**args, stop=[stop]).choices[0]
    assert cut.message.content == full[: full.index(stop)]
    assert cut.finish_reason == "stop"


# --- errors: OpenAI's shape, the right status, and the service keeps serving ---------

def error_of(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])
    return body["error"]


def post_chat(gateway, body=None, content=None, headers=None) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, content=content,
                      headers=headers or {"Content-Type": "application/json"}, timeout=60)


def test_bad_json_is_400(gateway):
    resp = post_chat(gateway, content=b'{"model": "tiny", "messages": [')
    assert resp.status_code == 400
    assert error_of(resp)["code"] == "invalid_json"


def test_missing_messages_is_400(gateway):
    resp = post_chat(gateway, {"model": MODEL})
    assert resp.status_code == 400
    assert "messages" in error_of(resp)["message"]


def test_unknown_model_is_404_for_the_sdk(gateway):
    with pytest.raises(openai.NotFoundError) as info:
        client_for(gateway).chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "x"}])
    assert "gpt-nope" in info.value.message


@pytest.mark.parametrize("url, status, code", [
    ("data:image/png;base64,!!!not-base64!!!", 400, "invalid_image"),
    ("not base64 at all ###", 400, "invalid_image"),
    (data_url(b"hello, I am a text file\n" * 10, "image/png"), 415, "unsupported_media_type"),
    (data_url(b"plain text", "text/plain"), 415, "unsupported_media_type"),
    (data_url(png_bytes()[:60]), 400, "invalid_image"),
    ("file:///etc/passwd", 400, "image_url_refused"),
    ("/etc/passwd", 400, "image_url_refused"),
    ("http://[::1]:9/x.png", 400, "image_url_refused"),
])
def test_bad_images_are_4xx(gateway, url, status, code):
    body = {"model": MODEL, "messages": [{"role": "user", "content": [image_part(url)]}]}
    resp = post_chat(gateway, body)
    assert resp.status_code == status, resp.text
    assert error_of(resp)["code"] == code
    # ...and the service still answers.
    assert httpx.get(f"{gateway.url}/health", timeout=10).status_code == 200


def test_video_reaches_an_engine_that_takes_it_or_is_refused_clearly(gateway):
    mp4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64
    body = {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": data_url(mp4, "video/mp4")}}, {"type": "text", "text": "?"}]}]}
    resp = post_chat(gateway, body)
    # Both gateways accept the video; the local engine behind them says it can't use it.
    assert resp.status_code == 415 and "local engine" in error_of(resp)["message"]
    body["messages"][0]["content"][0]["video_url"]["url"] = data_url(b"not a video at all", "video/mp4")
    resp = post_chat(gateway, body)
    assert resp.status_code == 415 and "not a video" in error_of(resp)["message"]


def test_text_file_served_as_image_over_http_is_415(gateway, image_server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": [image_part(f"{image_server}/text.png")]}]}
    resp = post_chat(gateway, body)
    assert resp.status_code == 415
    assert error_of(resp)["code"] == "unsupported_media_type"


def test_max_tokens_beyond_the_context_is_400(gateway):
    resp = post_chat(gateway, {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**6})
    assert resp.status_code == 400
    assert "MAX_MODEL_LEN" in error_of(resp)["message"]


def test_unknown_route_is_openai_shaped_404(gateway):
    resp = httpx.get(f"{gateway.url}/v1/nothing", timeout=10)
    assert resp.status_code == 404
    assert error_of(resp)["code"] == "not_found"
