"""A fast fake OpenAI-compatible upstream, for load tests and for isolating the gateway's
own cost in benchmarks (it does no inference: every answer is canned).

    python bench/fake_upstream.py --port 9100 [--chunks 16] [--delay-ms 10] [--batch 0]

`--batch N` answers at most N requests at once (others wait), as an engine's batch does:
then a replica's throughput is N answers per answer's time, like a real one's.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web


def make_app(chunks: int, delay_s: float, batch: int = 0) -> web.Application:
    batch_places = asyncio.Semaphore(batch) if batch else None
    def chunk(i: int) -> bytes:
        payload = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": "fake",
                   "choices": [{"index": 0, "delta": {"content": f" tok{i}"}, "finish_reason": None}]}
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    body = [chunk(i) for i in range(chunks)]
    usage = {"prompt_tokens": 10, "completion_tokens": chunks, "total_tokens": 10 + chunks}
    final = b"data: " + json.dumps({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                                    "model": "fake", "choices": [], "usage": usage}).encode() + b"\n\n"

    async def models(_):
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        request_body = await request.json()
        if not request_body.get("stream"):
            if batch_places is not None:
                async with batch_places:
                    await asyncio.sleep(delay_s * chunks)
            else:
                await asyncio.sleep(delay_s * chunks)
            return web.json_response({"id": "chatcmpl-fake", "object": "chat.completion", "model": "fake",
                                      "choices": [{"index": 0, "finish_reason": "length", "message": {
                                          "role": "assistant", "content": "".join(f" tok{i}" for i in range(chunks))}}],
                                      "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in body:
            await response.write(piece)
            if delay_s:
                await asyncio.sleep(delay_s)
        await response.write(final + b"data: [DONE]\n\n")
        return response

    app = web.Application(client_max_size=64 * 1024 * 1024)  # images: aiohttp's default is 1 MiB
    app.add_routes([web.get("/v1/models", models), web.post("/v1/chat/completions", chat)])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--delay-ms", type=float, default=10)
    parser.add_argument("--batch", type=int, default=0, help="requests answered at once (0: no limit)")
    args = parser.parse_args()
    web.run_app(make_app(args.chunks, args.delay_ms / 1000, args.batch), host="127.0.0.1", port=args.port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
