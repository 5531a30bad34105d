"""The one codec of OpenAI-style server-sent events, for every producer and consumer.

- Framing: `frame(payload)` (optionally with an `event:` name, as the Responses API
  streams), `DONE`, and `frame_data` for a payload that is already JSON.
- Splitting: `EventSplitter` turns bytes in arbitrary chunks into whole events; an event
  ends at a blank line ("\\n\\n", or "\\r\\n\\r\\n" from servers that use CRLF).
- Reading: `data_of(event)` is an event's data (its `data:` lines joined, as the SSE
  standard says); `payload_of(event)` that data as a JSON object, or `None` for `[DONE]`.

Errors are framed like any payload: `frame(ServiceError.body())`.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, AsyncIterable, Mapping
from typing import Any

from vlserve import json_bytes

DONE = b"data: [DONE]\n\n"
EVENT_END = re.compile(rb"\r?\n\r?\n")
_EVENT_END_KEPT = re.compile(rb"(\r?\n\r?\n)")


def frame(payload: Mapping[str, Any], event: str | None = None) -> bytes:
    """One event holding `payload` as compact JSON (non-ASCII text kept as it is)."""
    return frame_data(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(), event)


def frame_data(data: bytes, event: str | None = None) -> bytes:
    """One event holding `data`, which is already encoded (one line of JSON)."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + data + b"\n\n"


class EventSplitter:
    """Bytes as they arrive → whole events, holding back an event that is not complete."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events completed by `chunk`, each without its blank line; empty ones dropped."""
        *events, self._pending = EVENT_END.split(self._pending + chunk)
        return [event for event in events if event]

    def feed_raw(self, chunk: bytes) -> bytes:
        """The events completed by `chunk` exactly as they arrived, blank lines included:
        a relay passes them on untouched and splits them (`split_events`) only when it must."""
        if not self._pending and chunk.endswith(b"\n\n"):  # the usual chunk: whole events
            return chunk
        data = self._pending + chunk
        lf, crlf = data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n")
        cut = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
        ready, self._pending = data[:cut], data[cut:]
        return ready

    def rest(self) -> bytes:
        """What arrived after the last complete event (a stream cut short leaves some)."""
        rest, self._pending = self._pending, b""
        return rest


def split_keeping_ends(raw: bytes) -> list[tuple[bytes, bytes]]:
    """Events (from `feed_raw`) → (event, the blank line that ended it) pairs, so a relay
    can put back exactly what it does not change; the last pair's end may be empty."""
    parts = _EVENT_END_KEPT.split(raw)
    pairs = list(zip(parts[0::2], [*parts[1::2], b""], strict=True))
    return [pair for pair in pairs if pair != (b"", b"")]


def data_of(event: bytes) -> bytes | None:
    """The event's data: its `data:` lines, joined by newlines; None when it has none."""
    if event.startswith(b"data:") and b"\n" not in event:  # the usual one-line event
        return event[5:].strip()
    lines = [line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


class _Skip:
    """An event that carries no JSON object: a comment, a named event without data, garbage."""


SKIP = _Skip()


def payload_of(event: bytes) -> dict[str, Any] | _Skip | None:
    """The event's JSON object; None for `[DONE]`; SKIP for anything else."""
    data = data_of(event)
    if data is None:
        return SKIP
    if data == b"[DONE]":
        return None
    try:
        payload = json_bytes.loads(data)
    except ValueError:
        return SKIP
    return payload if isinstance(payload, dict) else SKIP


async def iter_events(chunks: AsyncIterable[bytes]) -> AsyncGenerator[dict[str, Any] | None, None]:
    """Yield each event's JSON object; `None` for `[DONE]`. Other events are skipped, and
    so is an unfinished last event that is not a whole JSON object."""
    splitter = EventSplitter()
    async for chunk in chunks:
        for event in splitter.feed(chunk):
            payload = payload_of(event)
            if not isinstance(payload, _Skip):
                yield payload
    payload = payload_of(splitter.rest().strip())
    if not isinstance(payload, _Skip):
        yield payload
