"""Analysis tasks: the prompt each task sends and the structured result it returns.

Tasks here: caption (one sentence), ocr (text in reading order), qa (answer a question).
Richer tasks (documents, boxes, extraction) belong to the analysis issue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ErrorKind, ServiceError


@dataclass(frozen=True)
class TaskPreset:
    prompt: str
    uses_language: bool

    def build_prompt(self, *, question: str | None, language: str | None, override: str | None) -> str:
        prompt = override or self.prompt.format(question=question)
        if language and self.uses_language:
            prompt += f" Answer in {language}."
        return prompt


PRESETS: dict[str, TaskPreset] = {
    "caption": TaskPreset("Describe this image in one sentence.", uses_language=True),
    "ocr": TaskPreset("Read all the text in this image and write it out in reading order, line by line, "
                      "as plain text. Write only the text, with no commentary.", uses_language=False),
    "qa": TaskPreset("{question}", uses_language=True),
}


def task_prompt(task: str, *, question: str | None, language: str | None, override: str | None) -> str:
    if task == "qa" and not (question or override):
        raise ServiceError(ErrorKind.BAD_REQUEST, "task=qa needs a `question`.", param="question")
    return PRESETS[task].build_prompt(question=question, language=language, override=override)


def _strip_fences(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```"):
        lines = stripped.splitlines()[1:]
        if lines and lines[-1].strip().startswith("```"):
            lines = lines[:-1]
        stripped = "\n".join(lines).strip()
    return stripped


def parse_result(task: str, text: str) -> dict[str, Any]:
    """The task's structured result from the model's raw text; never raises."""
    if task == "caption":
        return {"caption": text.strip()}
    if task == "ocr":
        body = _strip_fences(text)
        return {"text": body, "lines": [line.strip() for line in body.splitlines() if line.strip()]}
    return {"answer": text.strip()}
