"""Drawing detection results on a copy of the image, so a person can check them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageOps

COLORS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def draw_result(image_path: Path, result: dict[str, Any], out_path: Path) -> Path:
    """Boxes (`objects`), points (`points`) and OCR lines (`lines` with boxes), in the
    upright image's pixel coordinates, as /analyze returns them."""
    with Image.open(image_path) as opened:
        img = ImageOps.exif_transpose(opened).convert("RGB")
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 400))
    items = [(o.get("label", ""), o["box"]) for o in result.get("objects", []) if "box" in o]
    items += [(line.get("text", ""), line["box"]) for line in result.get("lines", []) if isinstance(line, dict)]
    for i, (label, box) in enumerate(items):
        color = COLORS[i % len(COLORS)]
        draw.rectangle(box, outline=color, width=width)
        if label:
            draw.text((box[0] + width, box[1] + width), str(label)[:40], fill=color)
    for i, point in enumerate(result.get("points", [])):
        x, y = point["point"]
        r = width * 3
        draw.ellipse([x - r, y - r, x + r, y + r], outline=COLORS[i % len(COLORS)], width=width)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    img.save(out_path)
    return out_path
