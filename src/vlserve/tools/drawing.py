"""Drawing detection results on a copy of the image, so a person can check them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

COLORS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def _ink_for(color: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on `color` (relative luminance)."""
    r, g, b = color
    return (0, 0, 0) if 0.2126 * r + 0.7152 * g + 0.0722 * b > 140 else (255, 255, 255)


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, color: tuple[int, int, int],
           font: ImageFont.ImageFont | ImageFont.FreeTypeFont, pad: int) -> None:
    """Text on a filled backing in the box's colour, so it reads on any image."""
    x, y = xy
    *_, right, bottom = draw.textbbox((x + pad, y + pad), text, font=font)
    draw.rectangle((x, y, right + pad, bottom + pad), fill=color)
    draw.text((x + pad, y + pad), text, fill=_ink_for(color), font=font)


def draw_result(image_path: Path, result: dict[str, Any], out_path: Path) -> Path:
    """Boxes (`objects`), points (`points`) and OCR lines (`lines` with boxes), in the
    upright image's pixel coordinates, as /analyze returns them."""
    with Image.open(image_path) as opened:
        img = ImageOps.exif_transpose(opened).convert("RGB")
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 400))
    font = ImageFont.load_default(size=max(11, round(max(img.size) / 50)))
    items = [(o.get("label", ""), o["box"]) for o in result.get("objects", []) if "box" in o]
    items += [(line.get("text", ""), line["box"]) for line in result.get("lines", []) if isinstance(line, dict)]
    for i, (label, box) in enumerate(items):
        color = COLORS[i % len(COLORS)]
        draw.rectangle(box, outline=color, width=width)
        if label:
            _label(draw, (box[0], box[1]), str(label)[:40], color, font, width)
    for i, point in enumerate(result.get("points", [])):
        x, y = point["point"]
        r = width * 3
        color = COLORS[i % len(COLORS)]
        draw.ellipse([x - r, y - r, x + r, y + r], outline=color, width=width)
        if point.get("label"):
            _label(draw, (x + r, y + r), str(point["label"])[:40], color, font, width)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    img.save(out_path)
    return out_path
