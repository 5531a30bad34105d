"""Local files as media: only inside ALLOWED_LOCAL_MEDIA_PATH, after resolving links and `..`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from vlserve.errors import ErrorKind, ServiceError
from vlserve.media.encoding import too_large


def refused(reason: str = "") -> ServiceError:
    return ServiceError(ErrorKind.IMAGE_FETCH_REFUSED, "Local file paths are not accepted"
                        + (f" ({reason})" if reason else "; send the media as a data URL, base64 or an upload")
                        + ".")


def read_local(ref: str, allowed_dir: Path | None, max_bytes: int) -> bytes:
    """The bytes of `ref` (a `file://` URL or a path) if it lies inside `allowed_dir`."""
    if allowed_dir is None:
        raise refused()
    raw = unquote(urlsplit(ref).path) if ref.lower().startswith("file:") else ref
    candidate = Path(raw).expanduser()
    if not candidate.is_absolute():
        candidate = allowed_dir / candidate
    try:
        resolved = candidate.resolve(strict=True)  # follows every symlink and `..`
    except (OSError, RuntimeError):
        raise refused("no such file in the allowed directory") from None
    if not resolved.is_relative_to(allowed_dir) or not resolved.is_file():
        raise refused("outside the allowed directory")
    with resolved.open("rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_large("The file", max_bytes)
    return data
