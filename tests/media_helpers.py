"""Images and policies for the media tests."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib

from PIL import Image

from vlserve.config import Settings
from vlserve.media import ImageHints, MediaNormalizer, MediaPolicy


def policy(**overrides) -> MediaPolicy:
    return MediaPolicy.from_settings(Settings(**overrides))


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def png(size=(32, 24), mode="RGB", color=0) -> bytes:
    return encode(Image.new(mode, size, color), "PNG")


def jpeg(size=(32, 24), color=(10, 200, 10), **params) -> bytes:
    return encode(Image.new("RGB", size, color), "JPEG", **params)


def png_bomb(width=100_000, height=100_000) -> bytes:
    """A tiny PNG whose header claims a huge image."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def normalize(ref: str, hints: ImageHints = ImageHints(), **overrides):
    return asyncio.run(MediaNormalizer(policy(**overrides)).image(ref, hints))


def from_bytes(data: bytes, hints: ImageHints = ImageHints(), **overrides):
    return asyncio.run(MediaNormalizer(policy(**overrides)).image_from_bytes(data, hints))


def with_orientation(img: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", exif=exif.tobytes(), quality=95)


def halves(size=(40, 20), left=(255, 0, 0), right=(0, 0, 255)) -> Image.Image:
    img = Image.new("RGB", size, right)
    img.paste(left, (0, 0, size[0] // 2, size[1]))
    return img


def photo(size: tuple[int, int], **params) -> bytes:
    """A JPEG with detail in it (noise), so its entropy-coded data is photo-like."""
    return encode(Image.effect_noise(size, 64).convert("RGB"), "JPEG", quality=90, **params)


def pdf(pages=((612, 792),), colors=None, rotate: dict[int, int] | None = None, password: str | None = None,
        media_box: dict[int, tuple[int, int]] | None = None) -> bytes:
    """A PDF with a page of each size (points), each a flat colour (or a picture: a gradient
    with a dark band near its top, so the page's way up can be seen); `rotate` maps a page
    index to a /Rotate; `media_box` gives a page another size (points) without drawing that
    much; `password` encrypts it."""
    images = []
    for index, (width, height) in enumerate(pages):
        img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
        img.paste((20, 20, 20), (0, 0, width, max(1, height // 10)))  # the top band
        if colors:
            img = Image.new("RGB", (width, height), colors[index])
        images.append(img)
    buf = io.BytesIO()
    images[0].save(buf, "PDF", save_all=True, append_images=images[1:], resolution=72)
    data = buf.getvalue()
    if rotate or password or media_box:
        import pypdf

        writer = pypdf.PdfWriter(clone_from=io.BytesIO(data))
        for index, degrees in (rotate or {}).items():
            writer.pages[index].rotate(degrees)
        for index, (width, height) in (media_box or {}).items():
            writer.pages[index].mediabox = pypdf.generic.RectangleObject([0, 0, width, height])
        if password:
            writer.encrypt(password)
        out = io.BytesIO()
        writer.write(out)
        data = out.getvalue()
    return data


def text_pdf(pages: int) -> bytes:
    """A PDF of `pages` text pages, written by hand (no PDF library writes plain text pages)."""
    lines = [f"Line {n}: the quarterly figures were reviewed and found to be in order, {n * 37} units." for n in
             range(60)]
    stream = "BT /F1 10 Tf 56 800 Td 12 TL " + " ".join(f"({line}) '" for line in lines) + " ET"
    objects = ["<< /Type /Catalog /Pages 2 0 R >>",
               "<< /Type /Pages /Kids [" + " ".join(f"{4 + 2 * i} 0 R" for i in range(pages)) + f"] /Count {pages} >>",
               "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for i in range(pages):
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "
                       f"/Contents {5 + 2 * i} 0 R >>")
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    out, offsets = io.BytesIO(), []
    out.write(b"%PDF-1.4\n")
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n{body}\nendobj\n".encode())
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    out.write("".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()
