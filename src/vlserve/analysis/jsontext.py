"""Finding JSON in what a model really writes: code fences, prose around it, single
quotes, trailing commas, an answer cut off by max_tokens."""

from __future__ import annotations

import ast
import json
import re

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.S)
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
MAX_REPAIR_ATTEMPTS = 64


def _attempts(text: str) -> list[str]:
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    out = []
    for candidate in candidates:
        starts = [i for i in (candidate.find("["), candidate.find("{")) if i >= 0]
        if starts:
            out.append(candidate[min(starts):].strip())
    return out


def _loads(text: str) -> object:
    for attempt in (text, _TRAILING_COMMA.sub(r"\1", text)):
        try:
            return json.loads(attempt)
        except ValueError:
            pass
        try:
            value = ast.literal_eval(attempt)  # single quotes, True/None spellings
            if isinstance(value, (list, dict)):
                return value
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    raise ValueError("not JSON")


def _prefix_value(text: str) -> object:
    """The longest prefix of `text` that parses once its open brackets are closed."""
    decoder = json.JSONDecoder()
    try:
        return decoder.raw_decode(text)[0]  # valid JSON followed by prose
    except ValueError:
        pass
    # Cut after a closing bracket (a complete element), latest first, a bounded number of times.
    ends = [i + 1 for i, char in enumerate(text) if char in "}]"][::-1][:MAX_REPAIR_ATTEMPTS]
    for end in ends:
        head = _TRAILING_COMMA.sub(r"\1", text[:end]).rstrip().rstrip(",")
        closers = _closers(head)
        if closers is None:
            continue
        try:
            return json.loads(head + closers)
        except ValueError:
            continue
    raise ValueError("no JSON prefix")


def _closers(text: str) -> str | None:
    stack, in_string, escaped = [], False, False
    for char in text:
        if in_string:
            escaped = not escaped and char == "\\"
            if char == '"' and not escaped:
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in "[{":
            stack.append("]" if char == "[" else "}")
        elif char in "]}":
            if not stack or stack.pop() != char:
                return None
    return None if in_string else "".join(reversed(stack))


def find_json(text: str) -> object | None:
    """The first JSON value in `text`, repaired where that is safe; None if there is none."""
    if not isinstance(text, str) or len(text) > 2_000_000:
        return None
    for attempt in _attempts(text):
        for parse in (_loads, _prefix_value):
            try:
                return parse(attempt)
            except ValueError:
                continue
    return None
