"""Parsing what Qwen3-VL really writes.

Formats, and where they are documented:
- Grounding: a JSON list of {"bbox_2d": [x1, y1, x2, y2], "label": ...}, coordinates
  relative to the image on a 0-1000 scale (QwenLM/Qwen3-VL evaluation/ODinW-13/README.md
  shows the answer format; run_odinw.py converts with `/ 1000 * [w, h, w, h]`). Models wrap
  it in ```json fences, as that script strips before parsing.
- Points: {"point_2d": [x, y], "label": ...} on the same scale (Qwen-VL fine-tuning data
  format docs: qwen-vl-finetune grounding format).
- Text spotting: {"bbox_2d": [...], "text_content": ...} per line (Qwen's OCR cookbook).
- Documents: Markdown/HTML for the `qwenvl markdown` / `qwenvl html` prompts, often fenced.
The outputs below are written in those formats, including the damage real outputs show:
prose around the JSON, trailing commas, single quotes, an answer cut off by max_tokens.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlserve.analysis import TaskInput, parse_result
from vlserve.analysis.jsontext import find_json

W, H = 2000, 1000

DETECT_OUTPUTS = {
    "fenced": '```json\n[\n\t{"bbox_2d": [100, 200, 300, 400], "label": "person"},\n\t{"bbox_2d": [500, 500, 1000, 1000], "label": "red car"}\n]\n```',
    "bare": '[{"bbox_2d": [100, 200, 300, 400], "label": "person"}, {"bbox_2d": [500, 500, 1000, 1000], "label": "red car"}]',
    "prose": 'Sure! Here are the objects:\n```json\n[{"bbox_2d": [100, 200, 300, 400], "label": "person"}, {"bbox_2d": [500, 500, 1000, 1000], "label": "red car"}]\n```\nLet me know if you need more.',
    "trailing_comma": '[{"bbox_2d": [100, 200, 300, 400], "label": "person"}, {"bbox_2d": [500, 500, 1000, 1000], "label": "red car"},]',
    "single_quotes": "[{'bbox_2d': [100, 200, 300, 400], 'label': 'person'}, {'bbox_2d': [500, 500, 1000, 1000], 'label': 'red car'}]",
    "truncated": '```json\n[{"bbox_2d": [100, 200, 300, 400], "label": "person"}, {"bbox_2d": [500, 500, 1000, 1000], "label": "red car"}, {"bbox_2d": [12, 3',
    "swapped_corners": '[{"bbox_2d": [300, 400, 100, 200], "label": "person"}, {"bbox_2d": [1000, 1000, 500, 500], "label": "red car"}]',
}


@pytest.mark.parametrize("name", DETECT_OUTPUTS)
def test_detect_outputs_parse_to_original_pixels(name):
    result = parse_result(TaskInput("detect", objects=("person", "red car")), DETECT_OUTPUTS[name], W, H)
    assert result["parsed"] is True
    assert result["objects"] == [{"label": "person", "box": [200, 200, 600, 400]},
                                 {"label": "red car", "box": [1000, 500, 2000, 1000]}]


def test_detect_keeps_scores_and_clamps_out_of_range_boxes():
    text = '[{"bbox_2d": [-20, 950, 1010, 1200], "label": "dog", "score": 0.9}]'
    assert parse_result(TaskInput("detect"), text, W, H)["objects"] == [
        {"label": "dog", "box": [0, 950, 2000, 1000], "score": 0.9}]


@pytest.mark.parametrize("text", ["I can't see any objects.", "", "[]", '{"nothing": true}', "[1, 2, 3]",
                                  '[{"bbox_2d": [1, 2, 3], "label": "short"}]', '[{"bbox_2d": "abc"}]'])
def test_detect_without_usable_boxes_is_an_empty_list(text):
    result = parse_result(TaskInput("detect"), text, W, H)
    assert result["objects"] == []


def test_points():
    text = '```json\n[{"point_2d": [250, 500], "label": "cup"}, {"point_2d": [1000, 0], "label": "lamp"}]\n```'
    assert parse_result(TaskInput("point"), text, W, H)["points"] == [
        {"label": "cup", "point": [500, 500]}, {"label": "lamp", "point": [2000, 0]}]


def test_ocr_with_boxes():
    text = ('```json\n[{"bbox_2d": [50, 100, 500, 150], "text_content": "INVOICE 2026-11"},\n'
            ' {"bbox_2d": [50, 200, 800, 250], "text_content": "Total: 42.00 EUR"}]\n```')
    result = parse_result(TaskInput("ocr", boxes=True), text, W, H)
    assert result["text"] == "INVOICE 2026-11\nTotal: 42.00 EUR"
    assert result["lines"][1] == {"text": "Total: 42.00 EUR", "box": [100, 200, 1600, 250]}


def test_plain_ocr_and_documents_lose_their_fences():
    assert parse_result(TaskInput("ocr"), "```\nline one\n\nline two\n```", W, H) == {
        "text": "line one\n\nline two", "lines": ["line one", "line two"]}
    markdown = "```markdown\n# Report\n\n| a | b |\n|---|---|\n| 1 | 2 |\n```"
    assert parse_result(TaskInput("document"), markdown, W, H) == {"markdown": "# Report\n\n| a | b |\n|---|---|\n| 1 | 2 |"}
    assert parse_result(TaskInput("document", format="html"), "<html><body>x</body></html>", W, H) == {
        "html": "<html><body>x</body></html>"}


@pytest.mark.parametrize("task, key", [("caption", "caption"), ("describe", "description"), ("qa", "answer"),
                                       ("compare", "answer")])
def test_text_tasks(task, key):
    assert parse_result(TaskInput(task), "  A cat on a mat.\n", W, H) == {key: "A cat on a mat."}


@given(st.text(max_size=300), st.sampled_from(["detect", "point", "ocr", "document", "caption"]), st.booleans())
@settings(max_examples=300, deadline=None)
def test_parsers_never_raise(text, task, boxes):
    parse_result(TaskInput(task, boxes=boxes), text, 640, 480)
    find_json(text)
