"""Decoding, correcting and (when it saves the engine work) downscaling one image.

CPU-bound throughout: callers run `prepare_image` off the event loop.

An image that needs nothing (a JPEG, PNG or WebP in RGB or greyscale, upright, one
frame, within the pixel budget) is checked by decoding it and forwarded byte for byte; so
is one up to twice the budget when the engine applies the budget itself, since shrinking
it here would cost the gateway more than it saves the engine (which decodes whatever it
is sent: 1.7 MP instead of 1.3 MP). Otherwise it is decoded,
turned upright (EXIF orientation), flattened to RGB (alpha over white, palette, CMYK,
16-bit, first frame of an animation), resized to exactly the size Qwen-VL's processor
would resize it to, and re-encoded. A resized image, or a lossy source, becomes a JPEG
at quality 95 (resampling has already changed every pixel; measured in bench/media.py,
PNG of a resized screenshot was 1.6x the bytes and 10x the time); a lossless source
that only needed its colours fixed stays lossless (PNG).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from vlserve.errors import ErrorKind, ServiceError
from vlserve.media.encoding import to_data_url, too_large
from vlserve.media.header import (
    ACCEPTED_FORMATS,
    SWAPS_SIDES,
    Header,
    check_tiles,
    exif_orientation,
    open_image,
    probe_header,
)
from vlserve.media.jpeg import decode_scaled
from vlserve.media.memory import DecodeMemory
from vlserve.media.policy import MediaPolicy, PixelBudget
from vlserve.media.sizing import downscale_target, smart_resize

# Formats every engine reads, forwarded untouched when nothing else needs doing.
PASS_THROUGH_FORMATS = {"JPEG", "MPO", "PNG", "WEBP"}
LOSSY_FORMATS = {"JPEG", "MPO", "WEBP", "AVIF"}
JPEG_QUALITY = 95
REDUCING_GAP = 3.0  # shrink by whole factors (cheap box filter) down to 3x the target, then resample
LEFT_TO_ENGINE_UP_TO = 2.0  # x the budget's pixels: shrunk by the engine, not here (see above)
VERIFY_SCALE = 8  # a JPEG sent as it is is checked by decoding it at 1/8 scale (see _verify)

@dataclass(frozen=True)
class NormalizedImage:
    data_url: str
    mime: str
    width: int         # the user's image, upright: what result coordinates refer to
    height: int
    nbytes: int        # bytes the client sent
    sent_width: int    # what the engine receives
    sent_height: int
    sent_bytes: int
    reencoded: bool
    budget: PixelBudget  # the pixel budget it was prepared for (engines are told the same)
    content_id: str = ""  # what the engine gets, named: the same bytes under the same budget, the same id


def content_id(mime: str, sent: bytes, budget: PixelBudget) -> str:
    """SHA-256 of the bytes sent and the budget they are sent under: engines that cache by a
    client's name for an image (vLLM's `uuid`) may take it for the image. SHA-256 because
    CPUs hash it in hardware (1.4 MB in under 1 ms) and a name one could collide would
    hand another request's image to the model."""
    head = f"{mime};{budget.factor};{budget.min_pixels};{budget.max_pixels};".encode()
    return hashlib.sha256(head + sent).hexdigest()


def prepare_image(data: bytes, policy: MediaPolicy, budget: PixelBudget,
                  memory: DecodeMemory | None = None, header: Header | None = None) -> NormalizedImage:
    """`header`: the one read_header() already made of these bytes, if any (it is closed here)."""
    try:
        if len(data) > policy.max_image_bytes:
            raise too_large("The image", policy.max_image_bytes)
        if not data:
            raise ServiceError(ErrorKind.INVALID_IMAGE, "The image is empty.")
        img = header.image if header is not None and header.image is not None else None
        if img is None:
            img = open_image(data)  # raises for what is not an image we can read: said below
            header = Header(img, probe_header(img, budget))
        probe = header.probe if header is not None else None
        cost = probe.decode_bytes if probe is not None else len(data)
        with (memory.hold(cost) if memory is not None else contextlib.nullcontext()), img:
            return _prepare_open(img, data, policy, budget)
    except ServiceError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ServiceError(ErrorKind.TOO_LARGE, "The image has too many pixels to decode safely; the limit is "
                           f"{policy.max_pixels:,} pixels (MEDIA_MAX_PIXELS).") from None
    except UnidentifiedImageError:
        raise ServiceError(ErrorKind.UNSUPPORTED_MEDIA, "The data is not an image in a format we can read.") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... on corrupt data
        raise ServiceError(ErrorKind.INVALID_IMAGE, f"The image could not be decoded ({type(exc).__name__}).") from None
    finally:
        if header is not None:
            header.close()  # a refusal before decoding still lets go of the opened header


def _prepare_open(img: Image.Image, data: bytes, policy: MediaPolicy, budget: PixelBudget) -> NormalizedImage:
    fmt = img.format
    check_tiles(img)
    if fmt not in ACCEPTED_FORMATS:
        raise ServiceError(ErrorKind.UNSUPPORTED_MEDIA, f"Image format {fmt} is not accepted; send JPEG, PNG, "
                           "WebP, GIF, BMP, TIFF or AVIF.")
    raw_w, raw_h = img.size
    if raw_w * raw_h > policy.max_pixels:
        raise ServiceError(ErrorKind.TOO_LARGE, f"The image is {raw_w}x{raw_h} pixels; the limit is "
                           f"{policy.max_pixels:,} pixels (MEDIA_MAX_PIXELS).")
    orientation = exif_orientation(img)
    width, height = (raw_h, raw_w) if orientation in SWAPS_SIDES else (raw_w, raw_h)
    target = downscale_target(height, width, budget) if policy.downscale else None
    if target is None:
        smart_resize(height, width, budget)  # the aspect-ratio check, even when not resizing
    animated = getattr(img, "is_animated", False) and fmt != "MPO"
    sendable = fmt in PASS_THROUGH_FORMATS and img.mode in ("RGB", "L") and orientation == 1 and not animated
    if sendable and target is not None and policy.engine_applies_budget and \
            width * height <= LEFT_TO_ENGINE_UP_TO * budget.max_pixels:
        target = None
    if sendable and target is None:
        _verify(img)
        mime = ACCEPTED_FORMATS[fmt]
        return NormalizedImage(to_data_url(mime, data), mime, width, height, len(data), width, height,
                               len(data), reencoded=False, budget=budget, content_id=content_id(mime, data, budget))
    jpeg = fmt in ("JPEG", "MPO")
    if target is not None and jpeg:
        # Let the JPEG decoder skip detail we are about to throw away: any eighth scale
        # when the file decodes cleanly, else Pillow's 1/2, 1/4 or 1/8.
        raw_target = (target[1], target[0]) if orientation not in SWAPS_SIDES else (target[0], target[1])
        scaled = decode_scaled(data, raw_target, img.mode)
        if scaled is not None:
            img = scaled
        else:
            img.draft("RGB", raw_target)
    img.load()
    # A JPEG shrunk while decoding has a small factor left to go (under 2, usually under
    # 1.3): area averaging does that at half the cost of bicubic, without its ringing.
    fixed = _upright_rgb(img, target, orientation,
                         Image.Resampling.BOX if jpeg else Image.Resampling.BICUBIC)
    mime, encoded = _encode(fixed, lossy=target is not None or fmt in LOSSY_FORMATS)
    return NormalizedImage(to_data_url(mime, encoded), mime, width, height, len(data), fixed.width, fixed.height,
                           len(encoded), reencoded=True, budget=budget, content_id=content_id(mime, encoded, budget))


def _verify(img: Image.Image) -> None:
    """Decode every byte of the image, so a truncated or corrupt file fails here, not in the
    engine. A JPEG at 1/8 scale: its whole entropy-coded data is still read (truncation
    and broken data fail the same way) but the inverse DCT and colour conversion are
    skipped, about 40% of a full decode."""
    if img.format in ("JPEG", "MPO"):
        img.draft(img.mode, (max(1, img.width // VERIFY_SCALE), max(1, img.height // VERIFY_SCALE)))
    img.load()


_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def _upright_rgb(img: Image.Image, target: tuple[int, int] | None, orientation: int,
                 resample: Image.Resampling) -> Image.Image:
    """Shrink first, then turn upright and flatten: every copy but the decoded image is small.

    A box reduction by a whole factor, band by band, comes before `resize`, which would
    otherwise make a premultiplied copy of the whole decoded image (and Pillow's own
    `reduce` a full-size temporary): measured on an 8900x8900 RGBA PNG, the peak went
    from ~680 MB to ~330 MB above the decoded image's start.
    """
    if img.mode == "P":
        img = _replace(img, img.convert("RGBA" if "transparency" in img.info else "RGB"))
    elif img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = _replace(img, _to_rgb(img))  # to 8-bit first: smaller, and every filter takes it
    if target is not None:
        raw_target = (target[0], target[1]) if orientation in SWAPS_SIDES else (target[1], target[0])
        factor = int(min(img.width / raw_target[0], img.height / raw_target[1]) / REDUCING_GAP)
        if factor > 1:
            img = _replace(img, _reduce_in_bands(img, factor))
        img = _replace(img, img.resize(raw_target, resample, reducing_gap=REDUCING_GAP))
    if orientation in _TRANSPOSE:
        img = img.transpose(_TRANSPOSE[orientation])
    return _to_rgb(img)


def _replace(old: Image.Image, new: Image.Image) -> Image.Image:
    """Free `old`'s pixels as soon as `new` is made from it (Pillow's close releases them)."""
    if new is not old:
        old.close()
    return new


BAND_ROWS = 64  # output rows reduced at a time


def _reduce_in_bands(img: Image.Image, factor: int) -> Image.Image:
    """`img.reduce(factor)`, computed in horizontal bands so no full-size copy is made."""
    width, height = img.width // factor, img.height // factor
    out = Image.new(img.mode, (width, height))
    step = BAND_ROWS * factor
    for top in range(0, height * factor, step):
        band = img.crop((0, top, width * factor, min(top + step, height * factor)))
        out.paste(band.reduce(factor), (0, top // factor))
    return out


def _to_rgb(img: Image.Image) -> Image.Image:
    """What the engine expects: 8-bit RGB (or L), transparency composited over white."""
    if img.mode in ("RGB", "L"):
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale down to 8 bits instead of clipping at 255.
        return img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _encode(img: Image.Image, lossy: bool) -> tuple[str, bytes]:
    buf = io.BytesIO()
    if lossy:
        img.save(buf, "JPEG", quality=JPEG_QUALITY)
        return "image/jpeg", buf.getvalue()
    img.save(buf, "PNG", compress_level=1)  # fast: these bytes only travel to the engine
    return "image/png", buf.getvalue()
