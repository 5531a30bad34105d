"""Qwen3-VL's coordinates → the user's pixels.

Qwen3-VL answers boxes and points relative to the image it saw, on a 0–1000 scale in
each axis (QwenLM/Qwen3-VL, evaluation/ODinW-13/run_odinw.py: `bbox / 1000 * [w, h, w, h]`
for relative models). Qwen2.5-VL used absolute pixels of the *resized* image instead;
that conversion does not apply here. Because the scale is relative, the gateway's own
downscaling changes nothing: the box maps onto the upright image the user sent.
"""

from __future__ import annotations

SCALE = 1000


def _clamp(value: float, limit: int) -> int:
    return int(min(max(round(value), 0), limit))


def to_pixels_box(box: list[float], width: int, height: int) -> list[int]:
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    return [_clamp(x1 / SCALE * width, width), _clamp(y1 / SCALE * height, height),
            _clamp(x2 / SCALE * width, width), _clamp(y2 / SCALE * height, height)]


def to_pixels_point(point: list[float], width: int, height: int) -> list[int]:
    x, y = (float(v) for v in point)
    return [_clamp(x / SCALE * width, width), _clamp(y / SCALE * height, height)]

