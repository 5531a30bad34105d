"""A streamed chat completion → the Responses API's event stream.

The engine streams chat chunks (the same for every engine); each delta opens, extends
or closes an output item, in the event order the openai SDK and agent frameworks read:
`response.created`, `response.in_progress`, then per item `output_item.added`,
(`content_part.added`), the deltas, their `.done`, (`content_part.done`),
`output_item.done`, and last `response.completed` (or `response.incomplete` when the
answer hit max_output_tokens) holding the whole Response. An error from the engine
becomes an `error` event followed by `response.failed`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import cast

from vlserve.gateway.responses_api.output import (
    OutputItem,
    OutputText,
    ReasoningText,
    ResponseError,
    ResponseObject,
    ResponseUsage,
    function_call_item,
    message_item,
    new_id,
    reasoning_item,
    reasoning_of,
    response_object,
    responses_logprobs,
    text_part,
    usage_of,
)
from vlserve.gateway.responses_api.request import ResponsesRequest
from vlserve.openai_types import ChatLogprobs, Completion, Delta, TextLogprobs, TokenLogprob, ToolCall, usage_from
from vlserve.sse import frame, iter_events


def event_bytes(event: dict[str, object]) -> bytes:
    return frame(event, event=str(event["type"]))


class _OpenItem:
    """The output item being streamed: its kind, its index and what it holds so far."""

    def __init__(self, kind: str, index: int, call_id: str = "", name: str = "") -> None:
        self.kind, self.index = kind, index
        self.id = new_id({"reasoning": "rs", "message": "msg", "function_call": "fc"}[kind])
        self.call_id, self.name = call_id, name
        self.text = ""
        self.logprobs: list[TokenLogprob] = []

    def item(self, status: str) -> OutputItem:
        if self.kind == "reasoning":
            return reasoning_item(self.id, self.text, status)
        if self.kind == "message":
            return message_item(self.id, [text_part(self.text, self.logprobs)] if status == "completed" else [],
                                status)
        return function_call_item(self.id, self.call_id, self.name, self.text, status)


class ResponseEvents:
    """Translates one stream; `translate(chunks)` yields the Responses SSE bytes."""

    def __init__(self, request: ResponsesRequest, model: str) -> None:
        self._request, self._model = request, model
        self._id, self._created = new_id("resp"), time.time()
        self._sequence = 0
        self._output: list[OutputItem] = []
        self._open: _OpenItem | None = None
        self._calls: dict[int, _OpenItem] = {}  # the chat stream's tool-call index → its item
        self._finish: str | None = None
        self._usage: ResponseUsage | None = None

    async def translate(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        yield self._event("response.created", response=self._response("in_progress"))
        yield self._event("response.in_progress", response=self._response("in_progress"))
        async for payload in iter_events(chunks):
            if payload is None:  # [DONE]
                break
            if isinstance(payload.get("error"), dict):
                for out in self._failed(payload["error"]):
                    yield out
                return
            for out in self._chunk(cast(Completion, payload)):  # a chunk of our own engine's stream
                yield out
        else:  # the engine's stream ended without [DONE]: an error event would have said why
            for out in self._failed({"message": "The engine's stream ended before it was complete.",
                                     "code": "upstream_error"}):
                yield out
            return
        for out in self._close():
            yield out
        status = "incomplete" if self._finish == "length" else "completed"
        yield self._event(f"response.{status}", response=self._response("completed"))

    # --- chat chunks → events -----------------------------------------------------------
    def _chunk(self, payload: Completion) -> list[bytes]:
        if payload.get("usage"):
            self._usage = usage_of(usage_from(payload.get("usage")))
        out: list[bytes] = []
        for choice in payload.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # the Responses API has one answer
            delta: Delta = choice.get("delta") or {}
            reasoning = reasoning_of(delta)
            if reasoning:
                out += self._text("reasoning", reasoning, None)
            if content := delta.get("content"):
                out += self._text("message", content, choice.get("logprobs"))
            for call in delta.get("tool_calls") or []:
                out += self._tool_call(call)
            self._finish = choice.get("finish_reason") or self._finish
        return out

    def _text(self, kind: str, text: str, logprobs: ChatLogprobs | TextLogprobs | None) -> list[bytes]:
        out = [] if self._open and self._open.kind == kind else [*self._close(), *self._begin(_OpenItem(
            kind, len(self._output)))]
        item = self._open
        assert item is not None
        item.text += text
        common = {"item_id": item.id, "output_index": item.index, "content_index": 0, "delta": text}
        if kind == "reasoning":
            return [*out, self._event("response.reasoning_text.delta", **common)]
        scored = responses_logprobs(logprobs)
        item.logprobs += scored
        return [*out, self._event("response.output_text.delta", **common, logprobs=scored)]

    def _tool_call(self, call: ToolCall) -> list[bytes]:
        index = call.get("index", 0)
        function = call.get("function") or {}
        out: list[bytes] = []
        item = self._calls.get(index)
        if item is None:
            item = _OpenItem("function_call", len(self._output), call.get("id") or new_id("call"),
                             function.get("name") or "")
            self._calls[index] = item
            out += [*self._close(), *self._begin(item)]
        arguments = function.get("arguments") or ""
        if arguments:
            item.text += arguments
            out.append(self._event("response.function_call_arguments.delta", item_id=item.id,
                                   output_index=item.index, delta=arguments))
        return out

    def _begin(self, item: _OpenItem) -> list[bytes]:
        self._open = item
        self._output.append(item.item("in_progress"))
        out = [self._event("response.output_item.added", output_index=item.index, item=item.item("in_progress"))]
        part: OutputText | ReasoningText | None = (
            ReasoningText(type="reasoning_text", text="") if item.kind == "reasoning"
            else text_part("", []) if item.kind == "message" else None)
        if part is not None:
            out.append(self._event("response.content_part.added", item_id=item.id, output_index=item.index,
                                   content_index=0, part=part))
        return out

    def _close(self) -> list[bytes]:
        item, self._open = self._open, None
        if item is None:
            return []
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind == "function_call":
            out = [self._event("response.function_call_arguments.done", **where, name=item.name,
                               arguments=item.text)]
        elif item.kind == "reasoning":
            out = [self._event("response.reasoning_text.done", **where, content_index=0, text=item.text),
                   self._event("response.content_part.done", **where, content_index=0,
                               part=ReasoningText(type="reasoning_text", text=item.text))]
        else:
            out = [self._event("response.output_text.done", **where, content_index=0, text=item.text,
                               logprobs=item.logprobs),
                   self._event("response.content_part.done", **where, content_index=0,
                               part=text_part(item.text, item.logprobs))]
        done = item.item("completed")
        self._output[item.index] = done
        return [*out, self._event("response.output_item.done", output_index=item.index, item=done)]

    def _failed(self, error: dict[str, object]) -> list[bytes]:
        code = error.get("code")
        message = str(error.get("message") or "The engine failed.")
        code = str(code) if code is not None else "server_error"
        # A failed Response's error code is one of OpenAI's few; the `error` event keeps ours.
        failed_code = "rate_limit_exceeded" if code in ("overloaded", "rate_limit_exceeded") else "server_error"
        return [self._event("error", code=code, message=message, param=error.get("param")),
                self._event("response.failed", response=self._response(
                    "failed", error={"code": failed_code, "message": message}))]

    # --- framing ------------------------------------------------------------------------
    def _response(self, status: str, error: ResponseError | None = None) -> ResponseObject:
        return response_object(self._request, self._id, self._created, self._model, status=status,
                               output=list(self._output), usage=self._usage if status == "completed" else None,
                               finish_reason=self._finish, error=error)

    def _event(self, kind: str, **fields: object) -> bytes:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event_bytes(event)
