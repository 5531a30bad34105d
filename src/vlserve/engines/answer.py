"""What a Qwen-style model writes → OpenAI's message fields.

Qwen3 and Qwen3-VL write tool calls as `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`
(their chat template's own instruction) and Thinking checkpoints write their reasoning
as `<think>...</think>` before the answer, or, when the template has already opened the
block in the prompt, only the closing `</think>`. Both engines use this module: the local
engine for what it generates, the upstream engine for an upstream that has no parser.

- `parse_answer(text, ...)`: a whole answer → `content`, `reasoning_content` (and
  `reasoning`, the newer name some clients read), `tool_calls` with ids and JSON-string
  arguments.
- `AnswerStream`: the same for text arriving piece by piece → OpenAI delta dicts; text
  that may be the start of a tag is held back until it is known not to be one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from vlserve.openai_types import ChatMessage, Delta, ToolCall

TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def tool_call(block: str) -> ToolCall | None:
    """One `<tool_call>` block's JSON → an OpenAI tool call, or None if it is not one."""
    try:
        data = json.loads(block.strip())
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": call_id(), "type": "function", "function": {"name": data["name"], "arguments": text}}


@dataclass
class Answer:
    content: str = ""
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)

    def message(self, keep_reasoning: bool = True) -> ChatMessage:
        content = self.content
        message: ChatMessage = {"role": "assistant", "content": content if content or not self.tool_calls else None}
        if self.reasoning is not None and keep_reasoning:
            message["reasoning_content"] = message["reasoning"] = self.reasoning
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return message


def parse_answer(text: str, in_reasoning: bool = False, tools: bool = True) -> Answer:
    stream = AnswerStream(in_reasoning, tools)
    answer = Answer()
    for delta in [*stream.feed(text), *stream.finish()]:
        answer.content += delta.get("content") or ""
        if "reasoning_content" in delta:
            answer.reasoning = (answer.reasoning or "") + delta["reasoning_content"]
        for call in delta.get("tool_calls", []):
            answer.tool_calls.append({"id": call["id"], "type": call["type"], "function": call["function"]})
    answer.content = answer.content.strip() if answer.tool_calls or answer.reasoning is not None else answer.content
    if answer.reasoning is not None:
        answer.reasoning = answer.reasoning.strip()
    return answer


def _partial_tag_at_end(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that is the beginning of one of `tags`."""
    longest = 0
    for tag in tags:
        for size in range(min(len(tag) - 1, len(text)), 0, -1):
            if text.endswith(tag[:size]):
                longest = max(longest, size)
                break
    return longest


class State(Enum):
    START = "start"          # nothing decided yet: the answer may open with <think>
    REASONING = "reasoning"  # inside <think>...</think>
    TEXT = "text"            # the answer's content (a <tool_call> or a stray </think> may come)
    TOOL = "tool"            # inside <tool_call>...</tool_call>


class AnswerStream:
    """Text pieces in, OpenAI deltas out (`content`, `reasoning_content`/`reasoning`,
    `tool_calls` with an `index` each, as the openai SDK assembles them).

    A state machine: each state has its own step, which consumes what it can decide from
    the buffered text and returns the deltas, or None when it needs more text.
    """

    def __init__(self, in_reasoning: bool = False, tools: bool = True) -> None:
        self._state = State.REASONING if in_reasoning else State.START
        self._tools = tools
        self._buffer = ""
        self._after_reasoning = False  # drop the blank lines between </think> and the answer
        self.calls = 0
        self._steps: dict[State, Callable[[str], list[Delta] | None]] = {
            State.START: self._start, State.REASONING: self._in_reasoning,
            State.TOOL: self._in_tool, State.TEXT: self._in_text}

    def feed(self, text: str) -> list[Delta]:
        self._buffer += text
        out: list[Delta] = []
        while True:
            step = self._steps[self._state](self._buffer)
            if step is None:
                return out
            out += step

    def finish(self) -> list[Delta]:
        rest, self._buffer = self._buffer, ""
        if not rest:
            return []
        if self._state is State.REASONING:
            return [_reasoning(rest)]
        if self._state is State.TOOL:  # an unclosed call: say what was written, as text
            return [{"content": TOOL_OPEN + rest}]
        return [{"content": rest}]

    def _start(self, buf: str) -> list[Delta] | None:
        stripped = buf.lstrip()
        if stripped.startswith(THINK_OPEN):
            self._buffer, self._state = stripped[len(THINK_OPEN):], State.REASONING
            return []
        if THINK_OPEN.startswith(stripped):  # nothing yet, or the start of the tag: wait
            return None
        self._state = State.TEXT
        return []

    def _in_reasoning(self, buf: str) -> list[Delta] | None:
        end = buf.find(THINK_CLOSE)
        if end >= 0:
            self._buffer, self._state, self._after_reasoning = buf[end + len(THINK_CLOSE):], State.TEXT, True
            return [_reasoning(buf[:end])] if buf[:end] else []
        keep = _partial_tag_at_end(buf, (THINK_CLOSE,))
        if len(buf) - keep <= 0:
            return None
        self._buffer = buf[len(buf) - keep:]
        return [_reasoning(buf[:len(buf) - keep])]

    def _in_tool(self, buf: str) -> list[Delta] | None:
        end = buf.find(TOOL_CLOSE)
        if end < 0:
            return None
        self._buffer, self._state = buf[end + len(TOOL_CLOSE):], State.TEXT
        call = tool_call(buf[:end])
        if call is None:
            return [{"content": TOOL_OPEN + buf[:end + len(TOOL_CLOSE)]}]
        self.calls += 1
        return [{"tool_calls": [{**call, "index": self.calls - 1}]}]

    def _in_text(self, buf: str) -> list[Delta] | None:
        if self._after_reasoning:
            buf = self._buffer = buf.lstrip("\n")
            if not buf:
                return None
            self._after_reasoning = False
        start = buf.find(TOOL_OPEN) if self._tools else -1
        # A lone closing tag in the answer (no <think> was opened, and the engine did not
        # start the answer in reasoning): the tag is dropped and the text around it stays
        # content. A stream cannot take back text it has sent, so a whole answer reads
        # the same, whatever the cut points. Whichever tag comes first is handled first.
        stray = buf.find(THINK_CLOSE)
        if stray >= 0 and (start < 0 or stray < start):
            self._buffer = buf[stray + len(THINK_CLOSE):]
            return [{"content": buf[:stray]}] if buf[:stray] else []
        if start >= 0:
            self._buffer, self._state = buf[start + len(TOOL_OPEN):], State.TOOL
            return [{"content": buf[:start]}] if buf[:start] else []
        keep = _partial_tag_at_end(buf, (TOOL_OPEN, THINK_CLOSE) if self._tools else (THINK_CLOSE,))
        if len(buf) - keep <= 0:
            return None
        self._buffer = buf[len(buf) - keep:]
        return [{"content": buf[:len(buf) - keep]}]


def _reasoning(text: str) -> Delta:
    return {"reasoning_content": text, "reasoning": text}
