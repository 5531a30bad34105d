"""PDFs in a chat: each OpenAI `file` part becomes its pages, as images, before anything
else looks at the request (the media path then treats them like any other image).

A file part that is not a PDF, or names an uploaded file (`file_id`: this server has no
Files API), is a 400 that says so: never dropped in silence. A PDF with more pages than a
request may carry images (MEDIA_MAX_IMAGES) is a 400 pointing to /analyze, which reads a
document page by page.
"""

from __future__ import annotations

from vlserve.errors import ErrorKind, ServiceError
from vlserve.media import MediaNormalizer
from vlserve.media.encoding import to_data_url
from vlserve.openai_types import ChatMessage, ContentPart


def _has_files(message: ChatMessage) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(part.get("type") == "file" for part in content)


async def pages_for_files(messages: list[ChatMessage], media: MediaNormalizer) -> None:
    """Replace, in place, every `file` part by an image_url part per page of its PDF."""
    room = media.policy.max_images
    for message in messages:
        if not _has_files(message):
            continue
        content = message["content"]
        assert isinstance(content, list)
        parts: list[ContentPart] = []
        for part in content:
            if part.get("type") != "file":
                parts.append(part)
                continue
            parts += await _page_parts(part, media, room)
        message["content"] = parts


async def _page_parts(part: ContentPart, media: MediaNormalizer, room: int) -> list[ContentPart]:
    file = part.get("file") or {}
    data_url = file.get("file_data")
    if not data_url:
        why = ("names an uploaded file (file_id); this server has no Files API" if file.get("file_id")
               else "has no file_data")
        raise ServiceError(ErrorKind.BAD_REQUEST, f"A file part {why}: send the PDF inline as file_data "
                           "(data:application/pdf;base64,...).", param="messages")
    data = await media.pdf_from_data_url(data_url)
    _, pages = await media.pdf_pages(data, None, max_pages=room,
                                     why=f"a chat request carries at most {room} images, MEDIA_MAX_IMAGES")
    return [{"type": "image_url", "image_url": {"url": to_data_url("image/jpeg", page.jpeg)}} for page in pages]
