"""Video inputs: checked by their container's signature, forwarded as data URLs.

The gateway does not decode video; it checks that the bytes are a container an engine
can open (MP4/QuickTime, WebM/Matroska, AVI) and applies the same size limits and
fetch policy as images. Engines that take video (LMDeploy, vLLM) receive a data URL.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlserve.errors import ErrorKind, ServiceError
from vlserve.media.encoding import to_data_url, too_large


@dataclass(frozen=True)
class NormalizedVideo:
    data_url: str
    mime: str
    nbytes: int


def video_mime(data: bytes) -> str | None:
    if data[4:8] == b"ftyp":
        return "video/quicktime" if data[8:10] == b"qt" else "video/mp4"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in data[:64] else "video/x-matroska"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "video/x-msvideo"
    return None


def prepare_video(data: bytes, max_bytes: int) -> NormalizedVideo:
    if len(data) > max_bytes:
        raise too_large("The video", max_bytes)
    mime = video_mime(data)
    if mime is None:
        raise ServiceError(ErrorKind.UNSUPPORTED_MEDIA, "The data is not a video we accept (MP4, QuickTime, "
                           "WebM, Matroska or AVI).")
    return NormalizedVideo(to_data_url(mime, data), mime, len(data))
