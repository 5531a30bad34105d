"""An Engine (engines/base.py's protocol) that answers from a script, in the test process.

For the in-process tier (tests/app/): the real app, routes, middleware, request builder
and error rendering, called through httpx's ASGITransport with no socket, and this in
place of a model. What it was asked is kept, so tests can check what reached the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from vlserve import openai_format as oai
from vlserve import sse
from vlserve.engines.base import EngineRequest, EngineStatus, EngineStream
from vlserve.openai_types import Completion


class ScriptedEngine:
    def __init__(self, answer: str = "a scripted answer", model: str = "scripted") -> None:
        self.answer, self.model = answer, model
        self.requests: list[EngineRequest] = []
        self.fail_with: BaseException | None = None  # raised by every call instead of answering
        self.fail_once: BaseException | None = None  # raised by the next call only
        self.hold = asyncio.Event()  # streams wait here before their first chunk while `holding`
        self.holding = False
        self.ready = True

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self.hold.set()

    def status(self) -> EngineStatus:
        if not self.ready:
            return EngineStatus(False, "loading")
        return EngineStatus(True, "ready", [self.model], max_model_len=4096, info={"engine": "scripted"})

    def _take(self, request: EngineRequest) -> None:
        self.requests.append(request)
        if self.fail_with is not None:
            raise self.fail_with
        if self.fail_once is not None:
            error, self.fail_once = self.fail_once, None
            raise error

    async def complete(self, request: EngineRequest) -> Completion:
        self._take(request)
        message = {"role": "assistant", "content": self.answer}
        usage = oai.usage(7, len(self.answer.split()))
        return oai.completion(oai.completion_id(), request.model, [oai.chat_choice(0, message, "stop")], usage)

    async def open_stream(self, request: EngineRequest) -> EngineStream:
        self._take(request)
        return EngineStream(self._chunks(request))

    async def _chunks(self, request: EngineRequest) -> AsyncIterator[bytes]:
        if self.holding:
            await self.hold.wait()
        cid = oai.completion_id()
        yield sse.frame(oai.chunk(cid, request.model, {"role": "assistant", "content": ""}, None, False))
        for word in self.answer.split(" "):
            yield sse.frame(oai.chunk(cid, request.model, {"content": word + " "}, None, False))
        yield sse.frame(oai.chunk(cid, request.model, {}, "stop", False))
        yield sse.frame(oai.usage_chunk(cid, request.model, oai.usage(7, len(self.answer.split()))))
        yield sse.DONE
