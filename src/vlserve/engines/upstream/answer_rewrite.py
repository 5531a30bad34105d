"""An upstream started without a tool-call or reasoning parser sends Qwen's raw
`<tool_call>` and `<think>` text as content; the gateway parses it the same way as the
local engine (answer.py), so clients get `tool_calls` and `reasoning_content` either way.

Whole answers are rewritten when their content holds a tag. Streams pass through byte
for byte until a chunk holds a tag (Qwen's tags are single tokens, so they arrive whole);
from then on each event's delta is rewritten. A Thinking model streams its reasoning
before the closing tag, so for a model whose id says "thinking" the stream is parsed
from its first event (the reasoning can't be taken back once sent as content).
"""

from __future__ import annotations

import re
from typing import Any

from vlserve.engines.answer import THINK_CLOSE, THINK_OPEN, TOOL_OPEN, AnswerStream, parse_answer
from vlserve.openai_types import Completion
from vlserve.sse import frame, payload_of

_TAGS = (TOOL_OPEN, THINK_OPEN, THINK_CLOSE)
TAG_BYTES = tuple(tag.encode() for tag in _TAGS)  # what a relay looks for in raw events
_A_TAG = re.compile("|".join(map(re.escape, _TAGS)))
_A_TAG_BYTES = re.compile(b"|".join(map(re.escape, TAG_BYTES)))


def starts_in_reasoning(model: str) -> bool:
    return "thinking" in model.lower()


def rewrite_completion(completion: Completion, model: str) -> Completion:
    """A non-streamed completion with raw tags in its content → OpenAI's fields (parsed as
    the same answer streamed would be: a Thinking model's from its reasoning)."""
    for choice in completion["choices"]:
        message = choice.get("message")
        content = message.get("content") if message else None
        if not message or not isinstance(content, str) or message.get("tool_calls") or \
                not _A_TAG.search(content):
            continue
        # A Thinking model's answer starts in reasoning, unless the upstream's own reasoning
        # parser already took the reasoning out.
        split = bool(message.get("reasoning_content") or message.get("reasoning"))
        answer = parse_answer(content, in_reasoning=starts_in_reasoning(model) and not split, tools=True)
        choice["message"] = {**message, **answer.message()}
        if answer.tool_calls and choice.get("finish_reason") in ("stop", None):
            choice["finish_reason"] = "tool_calls"
    return completion


class StreamRewriter:
    def __init__(self, model: str) -> None:
        self.active = starts_in_reasoning(model)
        self._answer = AnswerStream(in_reasoning=self.active, tools=True)

    def may_change(self, events: bytes) -> bool:
        """Whether these events need `feed`: once a tag has been seen, every event does."""
        if not self.active and _A_TAG_BYTES.search(events):
            self.active = True
        return self.active

    def feed(self, event: bytes) -> bytes:
        """One event (without its blank line) → the framed events that replace it."""
        return b"".join(self._rewrite(event))

    def _rewrite(self, event: bytes) -> list[bytes]:
        payload = payload_of(event)
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not isinstance(payload, dict) or not choices or not isinstance(choices[0], dict):
            return [event + b"\n\n"]
        choice = choices[0]
        delta = dict(choice.get("delta") or {})
        content, finish = delta.pop("content", None), choice.get("finish_reason")
        deltas = self._answer.feed(content) if isinstance(content, str) and content else []
        if finish:
            deltas += self._answer.finish()
            if self._answer.calls and finish == "stop":
                finish = "tool_calls"
        out = [_event(payload, {**choice, "delta": {**delta, **d}, "finish_reason": None}) for d in deltas]
        if finish or (not deltas and delta):
            out.append(_event(payload, {**choice, "delta": delta, "finish_reason": finish}))
        return out


def _event(payload: dict[str, Any], choice: dict[str, Any]) -> bytes:
    return frame({**payload, "choices": [choice]})
