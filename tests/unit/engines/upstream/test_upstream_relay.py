"""The upstream stream relay: ordinary bytes untouched, LMDeploy's error shapes translated,
usage reported, a missing [DONE] noticed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlserve.engines.upstream.relay import StreamRelay
from vlserve.sse import EVENT_END

CHUNK = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}'


def run(pieces: list[bytes], usages: list | None = None) -> tuple[bytes, bool]:
    relay = StreamRelay((usages if usages is not None else []).append)
    out = b"".join(relay.feed(p) for p in pieces) + relay.finish()
    return out, relay.failed


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n"])
def test_ordinary_events_pass_byte_for_byte_however_split(sep):
    raw = (CHUNK + sep) * 3 + b"data: [DONE]" + sep
    for size in (1, 3, 17, len(raw)):
        assert run([raw[i:i + size] for i in range(0, len(raw), size)]) == (raw, False)


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n"])
def test_flat_error_becomes_openai_envelope_and_ends_the_stream(sep):
    flat = b'data: {"message": "boom", "type": "server_error", "code": 500, "param": null, "object": "error"}'
    out, failed = run([CHUNK + sep + flat + sep + CHUNK + sep])
    events = [e for e in EVENT_END.split(out) if e.strip()]
    assert failed and len(events) == 2
    assert json.loads(events[1].strip()[6:])["error"]["message"].endswith("boom")


def test_content_that_mentions_errors_is_not_touched():
    text = b'data: {"choices": [{"index": 0, "delta": {"content": "the \\"error\\" field"}}]}\n\n'
    assert run([text]) == (text, False)


@given(st.lists(st.binary(max_size=40), max_size=12))
@settings(max_examples=300, deadline=None)
def test_never_raises_and_never_loses_ordinary_bytes(pieces):
    out, failed = run(pieces)
    if not failed:
        assert out == b"".join(pieces)


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n"])
def test_usage_is_reported_from_the_event_that_carries_it(sep):
    null_usage = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": null}'
    usage = b'data: {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}'
    raw = null_usage + sep + usage + sep + b"data: [DONE]" + sep
    for size in (1, 5, len(raw)):
        usages: list = []
        out, failed = run([raw[i:i + size] for i in range(0, len(raw), size)], usages)
        assert usages == [{"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}]
        assert (out, failed) == (raw, False)


@pytest.mark.parametrize("ending, done", [
    (b"data: [DONE]\n\n", True), (b"data: [DONE]", True), (b"data: [DONE]\r\n\r\n", True),
    (b"", False), (b'data: {"choices": [{"delta": {"content": "[DONE]"}}]}\n\n', False),
])
def test_the_end_of_the_stream_is_told_by_its_done_event(ending, done):
    relay = StreamRelay(lambda usage: None)
    out = relay.feed(CHUNK + b"\n\n" + ending) + relay.finish()
    assert relay.done is done
    assert out.startswith(CHUNK)
