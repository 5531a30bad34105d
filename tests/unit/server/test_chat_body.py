"""/v1/chat/completions reads its own body (routes/body.py): the edges of that read."""

from __future__ import annotations

import asyncio
import logging

from vlserve.config import Settings
from vlserve.server.app import create_app


def scope(path: str) -> dict:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "headers": [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}


async def test_a_client_that_leaves_while_sending_the_body_is_no_error(caplog):
    app = create_app(Settings(UPSTREAM_BASE_URL="http://127.0.0.1:9"))
    messages = [{"type": "http.request", "body": b'{"model": "m", "messages": [{"ro', "more_body": True},
                {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # nothing more ever comes
        return {}

    async def send(message: dict) -> None:
        sent.append(message)

    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(app(scope("/v1/chat/completions"), receive, send), 5)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
