"""The prompt each analysis task sends. Prompts follow Qwen3-VL's own usage:
grounding and OCR-with-boxes ask for JSON with `bbox_2d`/`point_2d` (QwenLM/Qwen3-VL
evaluation/ODinW-13 prompt), documents use the `qwenvl markdown` / `qwenvl html`
prompts of Qwen's document-parsing cookbook."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ErrorKind, ServiceError

TASKS = ("caption", "describe", "ocr", "document", "detect", "point", "qa", "extract", "compare")


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


def _require(condition: bool, message: str, param: str) -> None:
    if not condition:
        raise ServiceError(ErrorKind.BAD_REQUEST, message, param=param)


def _categories(objects: tuple[str, ...]) -> str:
    return ", ".join(objects)


def build_prompt(spec: TaskInput) -> str:
    """The task's prompt (or the caller's own), after checking what the task needs."""
    task = spec.task
    _require(task in TASKS, f"Unknown task {task!r}; tasks are: {', '.join(TASKS)}.", "task")
    if task == "compare":
        _require(spec.image_count >= 2, "task=compare needs two or more images (`images`).", "images")
    else:
        _require(spec.image_count == 1, f"task={task} takes exactly one image.", "images")
    if task in ("qa", "compare"):
        _require(bool(spec.question or spec.prompt), f"task={task} needs a `question`.", "question")
    if spec.prompt:
        return spec.prompt
    prompt = _preset(spec)
    if spec.language and task in ("caption", "describe", "qa", "compare"):
        prompt += f" Answer in {spec.language}."
    return prompt


def _preset(spec: TaskInput) -> str:
    task = spec.task
    if task == "caption":
        return "Describe this image in one sentence."
    if task == "describe":
        return "Describe this image in detail, in one paragraph."
    if task == "ocr" and spec.boxes:
        return ("Spot all the text in the image at line level, and output in JSON format as a list of "
                '{"bbox_2d": [x1, y1, x2, y2], "text_content": "..."}.')
    if task == "ocr":
        return ("Read all the text in this image and write it out in reading order, line by line, as plain "
                "text. Write only the text, with no commentary.")
    if task == "document":
        return "qwenvl html" if spec.format == "html" else "qwenvl markdown"
    if task == "detect":
        if spec.objects:
            return (f"Locate every instance that belongs to the following categories: '{_categories(spec.objects)}'. "
                    "Report bbox coordinates in JSON format.")
        return "Locate every object in the image. Report bbox coordinates and labels in JSON format."
    if task == "point":
        what = f"every instance of '{_categories(spec.objects)}'" if spec.objects else "every object"
        return f"Point to {what} in the image. Report point coordinates and labels in JSON format."
    if task == "extract":
        return ("Extract the information in this image as one JSON object that follows this JSON Schema. "
                "Answer with the JSON object only.\n")  # the schema itself is appended by extract.py
    return spec.question or ""
