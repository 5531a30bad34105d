"""Reading OpenAI-style SSE streams: bytes in arbitrary chunks → parsed `data:` payloads."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any

# Where one SSE event ends: a blank line ("\n\n", or "\r\n\r\n" from servers that use CRLF).
EVENT_END = re.compile(rb"\r?\n\r?\n")


async def iter_events(chunks: AsyncIterable[bytes]) -> AsyncGenerator[dict[str, Any] | None, None]:
    """Yield each `data:` payload as a dict; `None` for `[DONE]`. Other lines are skipped."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            event = _parse_line(line)
            if event is not _SKIP:
                yield event
    event = _parse_line(buffer)
    if event is not _SKIP:
        yield event


_SKIP = object()


def _parse_line(line: bytes) -> Any:
    line = line.strip()
    if not line.startswith(b"data:"):
        return _SKIP
    payload = line[5:].strip()
    if payload == b"[DONE]":
        return None
    try:
        data = json.loads(payload)
    except ValueError:
        return _SKIP
    return data if isinstance(data, dict) else _SKIP
