"""An OpenAI-compatible upstream that answers every chat request with a scripted text.

For tests that need a known answer from "the model" (the tiny model's are random):
boxes at known places for the playground's drawing, say. `start()` runs it in a thread of
the test process, with a real gateway put in front of it.

Run as a program (`python scripted_upstream.py --port N`), it is the stand-in engine the
container tests give `vlserve launch` as ENGINE_COMMAND (LMDeploy needs a GPU). It needs
only aiohttp, which the gateway's image has. Routes under /stand-in/ let a test read the
requests it got, hold streams (with --hold, a stream stops after its first word until
`release`), and make it fail: `sick` (its /v1/models answers 503 until `well`) and `crash`
(the process exits with code 3, as an engine that dies).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import threading

from aiohttp import web


class ScriptedUpstream:
    def __init__(self, answer: str, model: str = "scripted", hold: bool = False, owned_by: str = "scripted",
                 uses_max_tokens: bool = False) -> None:
        """`hold`: streams wait after their first word until /stand-in/release (and again
        after /stand-in/hold); `owned_by`: the engine its /v1/models names (vLLM says "vllm",
        LMDeploy "lmdeploy"); `uses_max_tokens`: its usage says the answer took all of
        `max_tokens`, as a model that never stops early."""
        self.answer, self.model, self.hold, self.owned_by = answer, model, hold, owned_by
        self.uses_max_tokens = uses_max_tokens
        self.hold_whole = False  # whole (not streamed) answers wait for /stand-in/release too
        self.requests: list[dict] = []
        self.sick = False
        self.released: asyncio.Event | None = None  # made on the server's own loop
        self.loop = asyncio.new_event_loop()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _models(self, _: web.Request) -> web.Response:
        if self.sick:
            return web.json_response({"error": {"message": "the stand-in engine was made sick"}}, status=503)
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model",
                                                               "owned_by": self.owned_by}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        completion = body.get("max_tokens", 5) if self.uses_max_tokens else 5
        usage = {"prompt_tokens": 10, "completion_tokens": completion, "total_tokens": 10 + completion}
        if not body.get("stream"):
            if self.hold_whole:
                await self._released().wait()
            return web.json_response({
                "id": "x", "object": "chat.completion", "created": 0, "model": self.model, "usage": usage,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": self.answer}}]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await self._send_delta(response, {"role": "assistant", "content": ""})
        for number, word in enumerate(re.findall(r"\s*\S+\s*", self.answer) or [self.answer]):
            if number == 1 and self.hold:
                await self._released().wait()
            await self._send_delta(response, {"content": word})
        await response.write(b"data: [DONE]\n\n")
        return response

    async def _send_delta(self, response: web.StreamResponse, delta: dict) -> None:
        chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": self.model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

    # --- the stand-in's controls ------------------------------------------------------------
    async def _requests(self, _: web.Request) -> web.Response:
        return web.json_response(self.requests)

    def _released(self) -> asyncio.Event:
        if self.released is None:
            self.released = asyncio.Event()
        return self.released

    async def _hold(self, _: web.Request) -> web.Response:
        self.hold, self.released = True, asyncio.Event()
        return web.json_response({"held": True})

    async def _release(self, _: web.Request) -> web.Response:
        self._released().set()
        return web.json_response({"released": True})

    async def _set_sick(self, request: web.Request) -> web.Response:
        self.sick = request.match_info["state"] == "sick"
        return web.json_response({"sick": self.sick})

    async def _crash(self, _: web.Request) -> web.Response:
        os._exit(3)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([web.get("/v1/models", self._models), web.post("/v1/chat/completions", self._chat),
                        web.get("/stand-in/requests", self._requests),
                        web.post("/stand-in/{state:sick|well}", self._set_sick),
                        web.post("/stand-in/release", self._release), web.post("/stand-in/hold", self._hold), web.post("/stand-in/crash", self._crash)])
        return app

    def start(self) -> ScriptedUpstream:
        self.port = serve_in_thread(self.app(), self.loop)
        return self


def serve_in_thread(app: web.Application, loop: asyncio.AbstractEventLoop) -> int:
    """Serve `app` on 127.0.0.1 from a daemon thread running `loop`; the port it listens on."""
    ready = threading.Event()
    port = 0

    def run() -> None:
        nonlocal port
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    assert ready.wait(10), "the server did not start"
    return port


def main() -> None:
    parser = argparse.ArgumentParser(description="A scripted OpenAI-compatible engine.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--answer", default="A scripted answer.")
    parser.add_argument("--model", default="scripted")
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args()
    upstream = ScriptedUpstream(args.answer, args.model, args.hold)
    web.run_app(upstream.app(), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
