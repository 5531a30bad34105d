"""The prompt of each analysis task (tasks.py says which task uses which).

Prompts follow Qwen3-VL's own usage: grounding and OCR-with-boxes ask for JSON with
`bbox_2d`/`point_2d` (QwenLM/Qwen3-VL evaluation/ODinW-13 prompt), documents use the `qwenvl markdown` / `qwenvl html`
prompts of Qwen's document-parsing cookbook."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskInput:
    task: str
    question: str | None = None
    language: str | None = None
    objects: tuple[str, ...] = ()
    boxes: bool = False
    format: str = "markdown"
    image_count: int = 1
    prompt: str | None = None


def _categories(objects: tuple[str, ...]) -> str:
    return ", ".join(objects)


def caption_prompt(_: TaskInput) -> str:
    return "Describe this image in one sentence."


def describe_prompt(_: TaskInput) -> str:
    return "Describe this image in detail, in one paragraph."


def ocr_prompt(spec: TaskInput) -> str:
    if spec.boxes:
        return ("Spot all the text in the image at line level, and output in JSON format as a list of "
                '{"bbox_2d": [x1, y1, x2, y2], "text_content": "..."}.')
    return ("Read all the text in this image and write it out in reading order, line by line, as plain "
            "text. Write only the text, with no commentary.")


def document_prompt(spec: TaskInput) -> str:
    return "qwenvl html" if spec.format == "html" else "qwenvl markdown"


def detect_prompt(spec: TaskInput) -> str:
    if spec.objects:
        return (f"Locate every instance that belongs to the following categories: '{_categories(spec.objects)}'. "
                "Report bbox coordinates in JSON format.")
    return "Locate every object in the image. Report bbox coordinates and labels in JSON format."


def point_prompt(spec: TaskInput) -> str:
    what = f"every instance of '{_categories(spec.objects)}'" if spec.objects else "every object"
    return f"Point to {what} in the image. Report point coordinates and labels in JSON format."


def extract_prompt(_: TaskInput) -> str:
    return ("Extract the information in this image as one JSON object that follows this JSON Schema. "
            "Answer with the JSON object only.\n")  # the schema itself is appended by extract.py


def question_prompt(spec: TaskInput) -> str:
    return spec.question or ""
