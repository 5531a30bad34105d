"""Decoding a JPEG straight to (about) the size it is about to be shrunk to.

libjpeg-turbo can scale while decoding by any eighth (1/8, 2/8, ... 8/8): the inverse DCT
then computes only the coefficients the smaller image needs. Pillow's `draft` offers
only the powers of two (1/2, 1/4, 1/8), so a 4000x3000 photo bound for 1312x960 comes
out 2000x1500 and the resize after it costs as much as the decode; at 3/8 it comes out
1500x1125 and the resize halves (bench/RESULTS.md, "12 MP"). simplejpeg is the
binding: its wheels carry their own libjpeg-turbo and it releases the GIL.
"""

from __future__ import annotations

import simplejpeg
from PIL import Image


def decode_scaled(data: bytes, min_size: tuple[int, int], mode: str) -> Image.Image | None:
    """The image at the smallest eighth scale at least `min_size` (width, height), or None
    when libjpeg-turbo reports anything at all: a cut file, stray bytes, an unusual colour
    space. The caller then decodes with Pillow, whose rules (a cut file is refused, stray
    bytes are not) stay the only ones deciding what is refused."""
    if mode not in ("RGB", "L"):
        return None
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="rgb" if mode == "RGB" else "gray",
                                        min_width=min_size[0], min_height=min_size[1], strict=True)
    except Exception:  # ValueError for libjpeg's errors and (strict) warnings; Pillow decides
        return None
    return Image.fromarray(pixels if mode == "RGB" else pixels[:, :, 0])
