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

import json
from typing import Any

from vlserve.engines.answer import THINK_CLOSE, THINK_OPEN, TOOL_OPEN, AnswerStream, parse_answer
from vlserve.sse import EVENT_END

_TAGS = (TOOL_OPEN, THINK_OPEN, THINK_CLOSE)
_TAG_BYTES = tuple(tag.encode() for tag in _TAGS)


def starts_in_reasoning(model: str) -> bool:
    return "thinking" in model.lower()


def rewrite_completion(completion: dict[str, Any]) -> dict[str, Any]:
    """A non-streamed completion with raw tags in its content → OpenAI's fields."""
    for choice in completion.get("choices") or []:
        message = choice.get("message") or {}
        content = message.get("content")
        if not isinstance(content, str) or message.get("tool_calls") or not any(t in content for t in _TAGS):
            continue
        answer = parse_answer(content, in_reasoning=False, tools=True)
        choice["message"] = {**message, **answer.message()}
        if answer.tool_calls and choice.get("finish_reason") in ("stop", None):
            choice["finish_reason"] = "tool_calls"
    return completion


class StreamRewriter:
    def __init__(self, model: str) -> None:
        self.active = starts_in_reasoning(model)
        self._answer = AnswerStream(in_reasoning=self.active, tools=True)

    def feed(self, events: bytes) -> bytes:
        """Complete SSE events in, the same events (rewritten once a tag was seen) out."""
        if not self.active:
            if not any(tag in events for tag in _TAG_BYTES):
                return events
            self.active = True
        out: list[bytes] = []
        for event in EVENT_END.split(events):
            if event:
                out += self._rewrite(event)
        return b"".join(event + b"\n\n" for event in out)

    def _rewrite(self, event: bytes) -> list[bytes]:
        if not event.startswith(b"data: {"):
            return [event]
        try:
            payload = json.loads(event[6:])
        except ValueError:
            return [event]
        choices = payload.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            return [event]
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
    return b"data: " + json.dumps({**payload, "choices": [choice]}, ensure_ascii=False).encode()
