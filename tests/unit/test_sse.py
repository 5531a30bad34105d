from __future__ import annotations

from vlserve.sse import iter_events


async def collect(chunks):
    async def gen():
        for chunk in chunks:
            yield chunk
    return [event async for event in iter_events(gen())]


async def test_events_split_anywhere_are_reassembled():
    raw = b'data: {"a": 1}\n\n: comment\n\ndata: {"b": "x\\ny"}\n\ndata: [DONE]\n\n'
    whole = await collect([raw])
    assert whole == [{"a": 1}, {"b": "x\ny"}, None]
    for size in (1, 2, 3, 7):
        assert await collect([raw[i:i + size] for i in range(0, len(raw), size)]) == whole


async def test_garbage_lines_are_skipped():
    assert await collect([b"data: {not json\n\ndata: [1,2]\n\nevent: x\n\n"]) == []
