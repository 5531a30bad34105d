"""An OpenAI-compatible upstream that answers every chat request with a scripted text.

For tests that need a known answer from "the model" (the tiny model's are random):
boxes at known places for the playground's drawing, say. It runs aiohttp in a thread of
the test process; a gateway (a real one) is put in front of it.
"""

from __future__ import annotations

import asyncio
import json
import threading

from aiohttp import web


class ScriptedUpstream:
    def __init__(self, answer: str, model: str = "scripted") -> None:
        self.answer, self.model = answer, model
        self.requests: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        if not body.get("stream"):
            return web.json_response({
                "id": "x", "object": "chat.completion", "created": 0, "model": self.model, "usage": usage,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": self.answer}}]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for delta in ({"role": "assistant", "content": ""}, {"content": self.answer}):
            chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": self.model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    def start(self) -> ScriptedUpstream:
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            app = web.Application()
            app.add_routes([web.get("/v1/models", self._models), web.post("/v1/chat/completions", self._chat)])
            runner = web.AppRunner(app)
            self.loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            self.loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        assert ready.wait(10), "the scripted upstream did not start"
        return self
