"""Each task's structured result, parsed from the model's raw text. Never raises.

tasks.py says which task uses which parser."""

from __future__ import annotations

import re

from vlserve.analysis.geometry import to_pixels_box, to_pixels_point
from vlserve.analysis.jsontext import find_json
from vlserve.analysis.presets import TaskInput

# A task's result as the client receives it (JSON): built here, read by no one on the server.
TaskResult = dict[str, object]

_FENCED = re.compile(r"^\s*```[\w-]*\s*\n?(.*?)\n?\s*```\s*$", re.S)


def strip_fences(text: str) -> str:
    match = _FENCED.match(text)
    return (match.group(1) if match else text).strip()


def _numbers(value: object, count: int) -> list[float] | None:
    if isinstance(value, str):
        value = re.findall(r"-?\d+(?:\.\d+)?", value)
    if not isinstance(value, (list, tuple)) or len(value) != count:
        return None
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def _items(text: str) -> tuple[list[dict], bool]:
    data = find_json(text)
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), [data])
    if not isinstance(data, list):
        return [], False
    return [item for item in data if isinstance(item, dict)], True


def _score(item: dict) -> dict[str, float]:
    for key in ("score", "confidence"):
        if isinstance(item.get(key), (int, float)):
            return {"score": float(item[key])}
    return {}


def _label(item: dict) -> str:
    return str(item.get("label") or item.get("name") or item.get("text_content") or "")


def parse_boxes(text: str, width: int, height: int) -> TaskResult:
    items, parsed = _items(text)
    objects = []
    for item in items:
        box = _numbers(item.get("bbox_2d", item.get("bbox", item.get("box"))), 4)
        if box is not None:
            objects.append({"label": _label(item), "box": to_pixels_box(box, width, height), **_score(item)})
    return {"objects": objects, "parsed": parsed}


def parse_points(text: str, width: int, height: int) -> TaskResult:
    items, parsed = _items(text)
    points = []
    for item in items:
        point = _numbers(item.get("point_2d", item.get("point")), 2)
        if point is not None:
            points.append({"label": _label(item), "point": to_pixels_point(point, width, height)})
    return {"points": points, "parsed": parsed}


def parse_text_lines(text: str, width: int, height: int) -> TaskResult:
    items, parsed = _items(text)
    lines: list[TaskResult] = []
    texts: list[str] = []
    for item in items:
        box = _numbers(item.get("bbox_2d", item.get("bbox")), 4)
        content = item.get("text_content", item.get("text"))
        if box is not None and isinstance(content, str):
            lines.append({"text": content, "box": to_pixels_box(box, width, height)})
            texts.append(content)
    return {"text": "\n".join(texts), "lines": lines, "parsed": parsed}


def parse_caption(_: TaskInput, text: str, width: int, height: int) -> TaskResult:
    return {"caption": text.strip()}


def parse_description(_: TaskInput, text: str, width: int, height: int) -> TaskResult:
    return {"description": text.strip()}


def parse_ocr(spec: TaskInput, text: str, width: int, height: int) -> TaskResult:
    if spec.boxes:
        return parse_text_lines(text, width, height)
    body = strip_fences(text)
    return {"text": body, "lines": [line.strip() for line in body.splitlines() if line.strip()]}


def parse_document(spec: TaskInput, text: str, width: int, height: int) -> TaskResult:
    return {spec.format: strip_fences(text)}


def parse_detections(_: TaskInput, text: str, width: int, height: int) -> TaskResult:
    return parse_boxes(text, width, height)


def parse_pointing(_: TaskInput, text: str, width: int, height: int) -> TaskResult:
    return parse_points(text, width, height)


def parse_answer(_: TaskInput, text: str, width: int, height: int) -> TaskResult:
    return {"answer": text.strip()}
