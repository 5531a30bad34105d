"""The one registry of analysis tasks: name → what it needs, its prompt, its parser.

The request schema (`AnalyzeRequest.task`), the prompts, the parsers and the CLI's help
all read this table, so a task is added here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vlserve.analysis import presets as p
from vlserve.analysis import results as r
from vlserve.analysis.presets import TaskInput
from vlserve.analysis.results import TaskResult
from vlserve.errors import ErrorKind, ServiceError

Parser = Callable[[TaskInput, str, int, int], TaskResult]


@dataclass(frozen=True)
class Task:
    name: str
    summary: str                          # one line, for the API schema and the CLI's help
    prompt: Callable[[TaskInput], str]
    parse: Parser
    several_images: bool = False          # compare: two or more; every other task: exactly one
    needs_question: bool = False
    needs_schema: bool = False
    answers_in_language: bool = False     # takes `language`


_ALL = [
    Task("caption", "one sentence", p.caption_prompt, r.parse_caption, answers_in_language=True),
    Task("describe", "a paragraph", p.describe_prompt, r.parse_description, answers_in_language=True),
    Task("ocr", "text in reading order (boxes=true: lines with boxes)", p.ocr_prompt, r.parse_ocr),
    Task("document", "the page as Markdown (format=html: HTML)", p.document_prompt, r.parse_document),
    Task("detect", "boxes of `objects` (or of everything)", p.detect_prompt, r.parse_detections),
    Task("point", "points of `objects`", p.point_prompt, r.parse_pointing),
    Task("qa", "answer `question`", p.question_prompt, r.parse_answer, needs_question=True,
         answers_in_language=True),
    Task("extract", "a JSON object valid against `schema`", p.extract_prompt, r.parse_answer, needs_schema=True),
    Task("compare", "answer `question` about two or more `images`", p.question_prompt, r.parse_answer,
         several_images=True, needs_question=True, answers_in_language=True),
]
TASKS: dict[str, Task] = {task.name: task for task in _ALL}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def describe_tasks() -> str:
    return "; ".join(f"{task.name}: {task.summary}" for task in _ALL) + "."


def _require(condition: bool, message: str, param: str) -> None:
    if not condition:
        raise ServiceError(ErrorKind.BAD_REQUEST, message, param=param)


def task_named(name: str) -> Task:
    _require(name in TASKS, f"Unknown task {name!r}; tasks are: {', '.join(TASK_NAMES)}.", "task")
    return TASKS[name]


def check_input(spec: TaskInput, has_schema: bool = False) -> Task:
    """The task, after checking that `spec` has what it needs (400 naming what is missing)."""
    task = task_named(spec.task)
    if task.several_images:
        _require(spec.image_count >= 2, f"task={task.name} needs two or more images (`images`).", "images")
    else:
        _require(spec.image_count == 1, f"task={task.name} takes exactly one image.", "images")
    if task.needs_question:
        _require(bool(spec.question or spec.prompt), f"task={task.name} needs a `question`.", "question")
    if task.needs_schema:
        _require(has_schema, f"task={task.name} needs a JSON Schema object in `schema`.", "schema")
    return task


def build_prompt(spec: TaskInput) -> str:
    """The task's prompt (or the caller's own)."""
    task = task_named(spec.task)
    if spec.prompt:
        return spec.prompt
    prompt = task.prompt(spec)
    if spec.language and task.answers_in_language:
        prompt += f" Answer in {spec.language}."
    return prompt


def parse_result(spec: TaskInput, text: str, width: int, height: int) -> TaskResult:
    return task_named(spec.task).parse(spec, text, width, height)
