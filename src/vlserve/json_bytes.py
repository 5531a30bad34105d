"""JSON to and from bytes where it is paid per request: orjson, and the standard library
for what orjson refuses.

orjson is ~10x faster than `json` and writes UTF-8 bytes directly (a 1 MB image's base64:
~0.08 ms against ~2 ms). It refuses integers beyond 64 bits when writing (a client's seed
may be one) and NaN or Infinity when reading (Python's own JSON writes them); those
values take the slow path instead of failing.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # raises ValueError for what is not JSON at all
