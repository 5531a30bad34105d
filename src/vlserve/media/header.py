"""An image's header, read once: its format, size, orientation and what decoding it will
cost, before any pixel is decoded. Pillow opens only the formats we accept."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from vlserve.errors import ErrorKind, ServiceError
from vlserve.media.memory import peak_bytes_per_pixel
from vlserve.media.policy import PixelBudget
from vlserve.media.sizing import smart_resize, visual_tokens

# Pillow format name → MIME type, for every format we accept.
ACCEPTED_FORMATS = {
    "JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp",
    "GIF": "image/gif", "BMP": "image/bmp", "TIFF": "image/tiff", "AVIF": "image/avif",
}
_EXIF_ORIENTATION = 0x0112
SWAPS_SIDES = {5, 6, 7, 8}

# Leading bytes of the accepted formats.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def looks_like_image(data: bytes) -> bool:
    return data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP") or \
        (data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"))


@dataclass(frozen=True)
class ImageProbe:
    """What an image's header says, before any pixel is decoded."""

    width: int          # upright
    height: int
    visual_tokens: int  # what the model will spend on it under the budget
    decode_bytes: int   # memory its decoding and resizing may hold at once


@dataclass
class Header:
    """An image's header, read once: the opened (not yet decoded) image and what it says.
    `image` is None when the header could not be read (prepare_image then says why)."""

    image: Image.Image | None
    probe: ImageProbe | None

    def close(self) -> None:
        if self.image is not None:
            self.image.close()


def read_header(data: bytes, budget: PixelBudget) -> Header:
    try:
        img = open_image(data)
    except Exception:
        return Header(None, None)
    return Header(img, probe_header(img, budget))


def probe_header(img: Image.Image, budget: PixelBudget) -> ImageProbe | None:
    """The header's facts; None when they can't be read."""
    try:
        raw_w, raw_h = img.size
        orientation = exif_orientation(img)
        per_pixel, scalable = peak_bytes_per_pixel(img)
        check_tiles(img)
    except Exception:
        return None
    width, height = (raw_h, raw_w) if orientation in SWAPS_SIDES else (raw_w, raw_h)
    try:
        target = smart_resize(height, width, budget)
        tokens = visual_tokens(height, width, budget)
    except ServiceError:
        return None
    # A baseline JPEG over the budget is decoded at 1/2, 1/4 or 1/8 scale (draft).
    scale = 1
    if scalable and target[0] * target[1] < height * width:
        while scale < 8 and (height // (scale * 2)) >= target[0] and (width // (scale * 2)) >= target[1]:
            scale *= 2
    decode = raw_w * raw_h * per_pixel // (scale * scale)
    return ImageProbe(width, height, tokens, decode)


_OPENERS = [fmt for fmt in ACCEPTED_FORMATS if fmt != "MPO"]  # Pillow's JPEG opener yields MPO itself


def open_image(data: bytes) -> Image.Image:
    """Pillow's decoder for the accepted formats only (no other plugin sees client bytes)."""
    return Image.open(io.BytesIO(data), formats=_OPENERS)


def check_tiles(img: Image.Image) -> None:
    """A TIFF whose tiles or strips are far larger than the image makes libtiff allocate
    a whole tile however small the picture: refused."""
    if img.format != "TIFF":
        return
    width, height = img.size
    tags = getattr(img, "tag_v2", {})
    tile = int(tags.get(_TILE_WIDTH) or 0) * int(tags.get(_TILE_LENGTH) or 0)
    strip = min(int(tags.get(_ROWS_PER_STRIP) or 0), height) * width  # 2**32-1 means "one strip"
    if max(tile, strip) > 2 * width * height + 65536:
        raise ServiceError(ErrorKind.INVALID_IMAGE, "The TIFF's tiles or strips are far larger than the image; "
                           "it is refused.")


_TILE_WIDTH, _TILE_LENGTH, _ROWS_PER_STRIP = 322, 323, 278


def exif_orientation(img: Image.Image) -> int:
    if img.format == "PNG" and "exif" not in img.info:
        # Pillow's PNG getexif() decodes the whole image to look for an eXIf chunk after the
        # pixels; the PNG spec puts it before them, where `info` already has it.
        return 1
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # unreadable EXIF is no reason to refuse the picture
        return 1
    return value if value in range(1, 9) else 1
