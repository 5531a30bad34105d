"""A real uvicorn server on 127.0.0.1 in a thread of the test process, so tests can look
inside it (its asyncio tasks, its connection pool) while real clients talk to it."""

from __future__ import annotations

import asyncio
import threading
import time

import uvicorn

from .servers import free_port


class InProcessServer:
    def __init__(self, app) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve())

    def start(self) -> InProcessServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def wait_healthy(self, timeout: float = 10) -> InProcessServer:
        """Until /health answers 200 (the engine behind it is ready)."""
        import httpx

        deadline = time.monotonic() + timeout
        while httpx.get(f"{self.url}/health").status_code != 200:
            assert time.monotonic() < deadline, "the server never became healthy"
            time.sleep(0.05)
        return self

    def call(self, fn):
        """Run `fn()` on the server's loop and return its result."""
        async def wrapper():
            return fn()
        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(10)

    def task_count(self) -> int:
        return self.call(lambda: len(asyncio.all_tasks()))

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(30)
