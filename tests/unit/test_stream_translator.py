"""The stream relay's translator: ordinary bytes untouched, LMDeploy's error shapes translated."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlserve.engines.upstream.lmdeploy_compat import StreamTranslator

CHUNK = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}'


def run(pieces: list[bytes]) -> tuple[bytes, bool]:
    translator = StreamTranslator()
    out = b"".join(translator.feed(p) for p in pieces) + translator.flush()
    return out, translator.failed


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n"])
def test_ordinary_events_pass_byte_for_byte_however_split(sep):
    raw = (CHUNK + sep) * 3 + b"data: [DONE]" + sep
    for size in (1, 3, 17, len(raw)):
        assert run([raw[i:i + size] for i in range(0, len(raw), size)]) == (raw, False)


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n"])
def test_flat_error_becomes_openai_envelope_and_ends_the_stream(sep):
    flat = b'data: {"message": "boom", "type": "server_error", "code": 500, "param": null, "object": "error"}'
    out, failed = run([CHUNK + sep + flat + sep + CHUNK + sep])
    events = [e for e in out.split(b"\n\n") if e.strip()]
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
