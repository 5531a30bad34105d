"""The connection protocol's write-stall limit, driven through asyncio's own flow-control
callbacks (on loopback the kernel buffers a whole answer, so a real socket can't show it)."""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.server import ServerState

from vlserve.config import Settings
from vlserve.server.http_protocol import ConnectionLimits, guarded_protocol


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.aborted = self.closed = False
        self.written: list[bytes] = []

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name in ("sockname", "peername") else default

    def is_closing(self) -> bool:
        return self.aborted or self.closed

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True

    def write(self, data) -> None:
        self.written.append(bytes(data))

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def connection(**settings) -> tuple[asyncio.Protocol, Transport]:
    async def app(scope, receive, send):  # never reached: no request is sent
        raise AssertionError("no request expected")

    config = uvicorn.Config(app=app, lifespan="off", log_level="warning")
    config.load()
    protocol_class = guarded_protocol(ConnectionLimits(Settings(**settings)))
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


async def test_a_client_that_stops_reading_is_disconnected_after_the_write_timeout():
    protocol, transport = await connection(HTTP_WRITE_TIMEOUT_S=0.2)
    protocol.pause_writing()  # the socket's buffer is full: the client reads nothing
    await asyncio.sleep(0.4)
    assert transport.aborted


async def test_a_client_that_reads_again_in_time_is_kept():
    protocol, transport = await connection(HTTP_WRITE_TIMEOUT_S=0.2)
    protocol.pause_writing()
    await asyncio.sleep(0.1)
    protocol.resume_writing()
    await asyncio.sleep(0.3)
    assert not transport.aborted


async def test_a_silent_connection_is_closed_after_the_header_timeout():
    _, transport = await connection(HTTP_HEADER_TIMEOUT_S=0.2)
    await asyncio.sleep(0.4)
    assert transport.closed and transport.written == []  # nothing to answer
