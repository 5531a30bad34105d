"""Text forms of media: base64 (lenient about whitespace, padding, URL-safe alphabet) and data URLs."""

from __future__ import annotations

import base64
import binascii
import re

from ..errors import ErrorKind, ServiceError

_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*?),(?P<data>.*)$", re.S)
_WHITESPACE = re.compile(r"\s+")


def too_large(what: str, limit: int) -> ServiceError:
    return ServiceError(ErrorKind.TOO_LARGE, f"{what} is larger than the limit of {limit:,} bytes.")


def decode_base64(text: str, max_bytes: int) -> bytes:
    cleaned = _WHITESPACE.sub("", text)
    if len(cleaned) * 3 // 4 > max_bytes:
        raise too_large("The media", max_bytes)
    cleaned = cleaned.replace("-", "+").replace("_", "/").rstrip("=")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError(ErrorKind.INVALID_IMAGE, "The media is not valid base64.") from None


def parse_data_url(url: str, kind: str, max_bytes: int) -> bytes:
    """The bytes of a base64 data URL whose type is `kind`/* (or unspecified)."""
    match = _DATA_URL.match(url)
    if not match:
        raise ServiceError(ErrorKind.INVALID_IMAGE, f"Malformed data URL: expected data:{kind}/<type>;base64,<data>.")
    mime = match["mime"].strip().lower()
    if mime and not mime.startswith(f"{kind}/") and mime != "application/octet-stream":
        article = "an" if kind[0] in "aeiou" else "a"
        raise ServiceError(ErrorKind.UNSUPPORTED_MEDIA, f"A data URL of type {mime!r} is not {article} {kind}.")
    if ";base64" not in match["params"].lower():
        raise ServiceError(ErrorKind.INVALID_IMAGE, f"Only base64 data URLs are accepted for {kind}s.")
    return decode_base64(match["data"], max_bytes)


def to_data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
