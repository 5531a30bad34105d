"""The local engine's answers in OpenAI's shapes.

Chat completions or the completions API (`kind` "chat" or "text"), whole or streamed,
with one or `n` choices, and the tokens' log-probabilities when they were asked for.
Chat answers go through answer.py, which turns Qwen's raw `<think>` and `<tool_call>`
text into `reasoning_content` and `tool_calls`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlserve import openai_format as oai
from vlserve import sse
from vlserve.engines.answer import AnswerStream, parse_answer
from vlserve.engines.local.token_scores import LogprobFormatter, ScoredToken
from vlserve.openai_types import Choice, Completion, Delta, Kind


@dataclass
class Generated:
    """One choice, generated whole."""

    text: str
    finish: str
    tokens: int
    scores: list[ScoredToken] = field(default_factory=list)


@dataclass(frozen=True)
class AnswerShape:
    """What a request asked its answer to look like."""

    kind: Kind
    model: str
    tools: bool = False       # tool definitions reached the template: parse <tool_call> blocks
    in_reasoning: bool = False  # the template opened <think>: the answer starts in reasoning
    keep_reasoning: bool = True
    logprobs: bool = False
    echo: str = ""            # text completions: the prompt, written before the answer


def whole_answer(shape: AnswerShape, formatter: LogprobFormatter, results: list[Generated],
                 prompt_tokens: int) -> Completion:
    choices = [_whole_choice(shape, formatter, index, result) for index, result in enumerate(results)]
    usage = oai.usage(prompt_tokens, sum(result.tokens for result in results))
    return oai.completion(oai.completion_id(shape.kind), shape.model, choices, usage, shape.kind)


def _whole_choice(shape: AnswerShape, formatter: LogprobFormatter, index: int, result: Generated) -> Choice:
    if shape.kind == "text":
        logprobs = formatter.legacy(result.scores, len(shape.echo))[0] if shape.logprobs else None
        return oai.text_choice(index, shape.echo + result.text, result.finish, logprobs)
    answer = parse_answer(result.text, shape.in_reasoning, shape.tools)
    finish = "tool_calls" if answer.tool_calls else result.finish
    return oai.chat_choice(index, answer.message(shape.keep_reasoning), finish,
                           formatter.chat(result.scores) if shape.logprobs else None)


class StreamedChoice:
    """The SSE events of one choice of a streamed answer, piece by piece."""

    def __init__(self, shape: AnswerShape, formatter: LogprobFormatter, cid: str, index: int,
                 include_usage: bool) -> None:
        self._shape, self._formatter = shape, formatter
        self._cid, self._index, self._usage_field = cid, index, include_usage
        self._answer = AnswerStream(shape.in_reasoning, shape.tools)
        self._pending: list[ScoredToken] = []  # scores of tokens whose text has not been sent yet
        self._offset = len(shape.echo)  # completions API: where the next token's text starts

    def start(self) -> list[bytes]:
        if self._shape.kind == "text":
            return [self._text_event(self._shape.echo, None, [])] if self._shape.echo else []
        return [self._chat_event({"role": "assistant", "content": ""}, None)]

    def feed(self, piece: str, scores: list[ScoredToken]) -> list[bytes]:
        self._pending += scores
        if self._shape.kind == "text":
            return [self._text_event(piece, None, self._take())] if piece or self._pending else []
        return [self._chat_event(delta, None) for delta in self._deltas(self._answer.feed(piece) if piece else [])]

    def finish(self, finish_reason: str) -> list[bytes]:
        if self._shape.kind == "text":
            return [self._text_event("", finish_reason, self._take())]
        events = [self._chat_event(delta, None) for delta in self._deltas(self._answer.finish())]
        finish = "tool_calls" if self._answer.calls else finish_reason
        return [*events, self._chat_event({}, finish)]

    def _deltas(self, deltas: list[Delta]) -> list[Delta]:
        if not self._shape.keep_reasoning:
            return [delta for delta in deltas if "reasoning_content" not in delta]
        return deltas

    def _take(self) -> list[ScoredToken]:
        taken, self._pending = self._pending, []
        return taken

    def _chat_event(self, delta: Delta, finish: str | None) -> bytes:
        # A token's score goes out with the first event after it that carries text.
        logprobs = self._formatter.chat(self._take()) if self._shape.logprobs and self._pending else None
        return sse.frame(oai.chunk(self._cid, self._shape.model, delta, finish, self._usage_field, self._index,
                                 logprobs))

    def _text_event(self, text: str, finish: str | None, scores: list[ScoredToken]) -> bytes:
        logprobs = None
        if self._shape.logprobs:
            logprobs, self._offset = self._formatter.legacy(scores, self._offset)
        choice = oai.text_choice(self._index, text, finish, logprobs)
        return sse.frame(oai.text_chunk(self._cid, self._shape.model, choice, self._usage_field))
