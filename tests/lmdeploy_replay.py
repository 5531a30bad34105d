"""A replay server for the bytes a real LMDeploy 0.18.0 api_server sent.

tests/fixtures/lmdeploy-0.18.0/transcripts.txt holds 30 exchanges recorded on a GPU,
each with the raw response bytes (status line, headers, chunked framing). This server
answers on 127.0.0.1 with exactly those bytes: GET /v1/models and /health with their
recordings, and POST /v1/chat/completions with whichever exchange a test selects. It
records the request bodies it receives so tests can check what the gateway forwarded.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "lmdeploy-0.18.0"
_BEGIN = b"##### >>> raw response bytes begin\n"
_END = b"##### <<< raw response bytes end"


def load_exchanges(path: Path = FIXTURES / "transcripts.txt") -> dict[int, tuple[str, bytes]]:
    """{number: (title, raw response bytes)}, the bytes cut exactly at the message's end."""
    data = path.read_bytes()
    exchanges = {}
    for match in re.finditer(rb"##### \[(\d+)\] ([^\n]*)\n", data):
        start = data.index(_BEGIN, match.end()) + len(_BEGIN)
        raw = data[start:data.index(_END, start)]
        exchanges[int(match.group(1))] = (match.group(2).decode(), _exact(raw))
    return exchanges


def _exact(raw: bytes) -> bytes:
    head, _, body = raw.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if length:
        return head + b"\r\n\r\n" + body[: int(length.group(1))]
    end = body.find(b"\r\n0\r\n\r\n")
    return head + b"\r\n\r\n" + (body[: end + 7] if end >= 0 else body)


def with_json_body(raw: bytes, body: dict) -> bytes:
    """A recorded non-stream response with its JSON body replaced (for older versions' quirks)."""
    head = raw.partition(b"\r\n\r\n")[0]
    payload = json.dumps(body).encode()
    head = re.sub(rb"(?im)^content-length:\s*\d+", b"content-length: " + str(len(payload)).encode(), head)
    return head + b"\r\n\r\n" + payload


def chunked_sse(raw_head_from: bytes, events: list[bytes]) -> bytes:
    """A streamed response in LMDeploy's framing (headers from a recording) with these events."""
    head = raw_head_from.partition(b"\r\n\r\n")[0]
    body = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
    return head + b"\r\n\r\n" + body


class ReplayServer:
    """Runs in a thread with its own event loop, so real clients in other processes can use it."""

    def __init__(self) -> None:
        self.exchanges = load_exchanges()
        self.chat_response: bytes = self.exchanges[8][1]
        self.received: list[dict] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0

    def start(self) -> ReplayServer:
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            body = await reader.readexactly(int(length.group(1))) if length else b""
            request_line = head.split(b"\r\n", 1)[0].decode()
            if request_line.startswith("GET /v1/models"):
                writer.write(self.exchanges[1][1])
            elif request_line.startswith("GET /health"):
                writer.write(self.exchanges[2][1])
            else:
                self.received.append(json.loads(body))
                writer.write(self.chat_response)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
