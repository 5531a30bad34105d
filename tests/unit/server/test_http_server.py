"""The connection protocol's timers (write stall, silent connection, the body's minimum rate),
driven through asyncio's own callbacks on a stand-in transport, on the loop's clock (on
loopback the kernel buffers a whole answer, so a real socket can't show a write stall)."""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.server import ServerState

from vlserve.config import Settings
from vlserve.server.http_protocol import ConnectionLimits, guarded_protocol


class Transport(asyncio.Transport):
    """A TCP transport's calls, recorded. `ended`: the server hung up (closed, or sent its FIN)."""

    def __init__(self) -> None:
        super().__init__()
        self.aborted = self.closed = self.eof_written = False
        self.written: list[bytes] = []

    @property
    def ended(self) -> bool:
        return self.closed or self.eof_written

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

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


async def no_request_expected(scope, receive, send):
    raise AssertionError("no request expected")


async def reads_the_body(scope, receive, send):
    """An app that reads the whole body, as the routes do, then answers 200."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def connection(app=no_request_expected, state: ServerState | None = None,
                     **settings) -> tuple[asyncio.Protocol, Transport]:
    config = uvicorn.Config(app=app, lifespan="off", log_level="warning")
    config.load()
    protocol_class = guarded_protocol(ConnectionLimits(Settings(**settings)))
    protocol = protocol_class(config=config, server_state=state or ServerState(), app_state={})
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


def post_head(length: int | None) -> bytes:
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{size}\r\n\r\n".encode()


async def test_a_body_slower_than_the_minimum_rate_is_cut_off_after_the_grace():
    protocol, transport = await connection(reads_the_body, HTTP_BODY_GRACE_S=0.2, HTTP_BODY_MIN_RATE=500)
    protocol.data_received(post_head(100_000))
    protocol.data_received(b"{")  # then a byte now and then: far below 500 bytes a second
    await asyncio.sleep(0.5)
    assert transport.ended
    assert b"408" in transport.written[0] and b"HTTP_BODY_MIN_RATE" in transport.written[0]


async def test_a_chunked_body_that_never_ends_is_cut_off_too():
    protocol, transport = await connection(reads_the_body, HTTP_BODY_GRACE_S=0.2, HTTP_BODY_MIN_RATE=500)
    protocol.data_received(post_head(None))
    protocol.data_received(b"1\r\n{\r\n")
    await asyncio.sleep(0.5)
    assert transport.ended and b"HTTP_BODY_MIN_RATE" in transport.written[0]


async def test_a_body_above_the_minimum_rate_has_the_time_it_needs():
    """Each second past the grace is bought by HTTP_BODY_MIN_RATE bytes: 600 bytes every
    0.1 s keeps buying more time than it spends (loop time: a slow machine slows both)."""
    protocol, transport = await connection(reads_the_body, HTTP_BODY_GRACE_S=0.2, HTTP_BODY_MIN_RATE=500,
                                           HTTP_BODY_TIMEOUT_S=60)
    protocol.data_received(post_head(100_000))
    for _ in range(8):  # 0.8 s, four times the grace
        protocol.data_received(b" " * 600)
        await asyncio.sleep(0.1)
    assert not transport.ended


async def test_an_operations_slot_serves_no_upgrade_and_is_given_back():
    """With every slot taken, a probe's extra slot answers /health only; an upgrade (which
    would carry the connection off to a WebSocket, and its slot with it) is refused, and
    the client's address can take a slot again once the connection is gone."""
    state = ServerState()
    state.connections.update(object() for _ in range(16))  # every ordinary slot held
    protocol, transport = await connection(state=state, HTTP_MAX_CONNECTIONS=16)
    assert not transport.ended and protocol.limits.ops_holders == {"127.0.0.1"}
    protocol.data_received(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    assert transport.ended and b"too_many_connections" in transport.written[0]
    protocol.connection_lost(None)
    assert protocol.limits.ops_holders == set()


async def test_after_an_error_the_clients_remaining_bytes_are_drained_then_the_connection_closed(monkeypatch):
    # A reset instead of a close would destroy the answer before the client read it: the
    # server sends its FIN after the answer, drops what the client still sends, then closes.
    monkeypatch.setattr("vlserve.server.http_protocol.LINGER_S", 0.2)
    protocol, transport = await connection(HTTP_MAX_HEADER_BYTES=2048)
    protocol.data_received(b"POST /v1/chat/completions HTTP/1.1\r\nX-Big: " + b"a" * 4096)
    assert b"431" in transport.written[0].split(b"\r\n")[0] and transport.eof_written and not transport.closed
    protocol.data_received(b"b" * 65536)  # the rest of what the client was sending: dropped
    assert len(transport.written) == 1
    await asyncio.sleep(0.3)
    assert transport.closed
