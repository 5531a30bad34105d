"""The HTTP/1.1 connection handling that makes the port safe to expose.

uvicorn (with httptools) bounds none of what a slow or hostile client can hold: headers
of any size, headers or a body trickled a byte at a time, an endless chunked body, or a
connection that never sends a byte are all kept forever. This protocol is uvicorn's own
with those bounds added, per connection:

- each request's line and headers: at most HTTP_MAX_HEADER_BYTES (431 beyond), received
  within HTTP_HEADER_TIMEOUT_S of their first byte (408); counted per request, so headers
  pipelined behind a request being answered are bounded too; a connection that sends
  nothing at all is closed after the same time;
- the body: received within HTTP_BODY_TIMEOUT_S of the headers (408), and after the
  first HTTP_BODY_GRACE_S at no less than HTTP_BODY_MIN_RATE bytes a second on average
  (Apache's mod_reqtimeout rule: the grace, plus a second per MinRate bytes received),
  chunked bodies included, so a body trickled at 1 byte/s or one that never ends is cut
  off within seconds, not after a minute; chunked trailers count towards the header
  limit and are not passed on;
- a client that stops reading an answer: after HTTP_WRITE_TIMEOUT_S without the socket
  draining, the connection is closed (its request is then cancelled like any other);
- open connections: at most HTTP_MAX_CONNECTIONS (503 beyond), kept below the process's
  file-descriptor limit with room for the engine's connections; beyond them, up to
  HTTP_OPS_CONNECTIONS more (one per client address) serve only GET /health and
  /metrics and must send their request within a second, so a liveness probe or a
  scraper still gets its answer while idle or slow clients hold every other slot;
- errors the server itself answers (a malformed request line, a CR inside a header) are
  in OpenAI's envelope like every other error, and then the connection is closed as RFC
  9112 9.6 asks: a FIN after the answer, the client's remaining bytes (the rest of an
  upload) read and dropped for LINGER_S; closed with them unread, the socket would send a
  reset, which can destroy the answer before the client reads it.

Idle keep-alive connections are closed after HTTP_IDLE_TIMEOUT_S (uvicorn's own timer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from vlserve.config import Settings
from vlserve.deadline import Deadline
from vlserve.errors import ErrorKind, ServiceError
from vlserve.server import connection_events

log = logging.getLogger("vlserve.http")

_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}
# File descriptors kept free of client connections: upstream connections, model files, logs.
FD_RESERVE = 128


def raw_error(kind: ErrorKind, message: str) -> bytes:
    """A whole HTTP response carrying `ServiceError(kind, message)`, for before the app runs."""
    body = json.dumps(ServiceError(kind, message).body()).encode()
    head = (f"HTTP/1.1 {kind.status} {_REASONS.get(kind.status, 'Error')}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


OPS_PATHS = frozenset({b"/health", b"/metrics"})
OPS_HEAD_TIMEOUT_S = 1.0  # a probe sends its request at once
LINGER_S = 2.0  # after an error answered mid-request, how long the client's bytes are drained


class ConnectionLimits:
    def __init__(self, settings: Settings) -> None:
        self.max_header_bytes = settings.http_max_header_bytes
        self.header_timeout_s = settings.http_header_timeout_s
        self.body_timeout_s = settings.http_body_timeout_s
        self.body_min_rate = settings.http_body_min_rate
        self.body_grace_s = settings.http_body_grace_s
        self.write_timeout_s = settings.http_write_timeout_s
        self.max_connections = effective_connection_limit(settings.http_max_connections)
        self.ops_connections = settings.http_ops_connections
        self.ops_holders: set[str] = set()  # client addresses holding an operations-only slot


def effective_connection_limit(wanted: int) -> int:
    """Raise the soft fd limit as far as the hard one allows; keep connections below it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    limit = min(wanted, max(16, soft - FD_RESERVE))
    if limit < wanted:
        log.warning("HTTP_MAX_CONNECTIONS=%d is above what the file-descriptor limit (%d) allows; using %d",
                    wanted, soft, limit)
    return limit


def guarded_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol class with `limits` applied (uvicorn takes the class)."""

    class GuardedHttpProtocol(_Guarded):
        pass

    GuardedHttpProtocol.limits = limits
    return GuardedHttpProtocol


class _Guarded(HttpToolsProtocol):
    limits: ConnectionLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True        # waiting for (more of) a request line and headers
        self._head_bytes = 0        # of the request being parsed (or of trailers)
        self._deadline = Deadline(self.loop)  # the head's, then the body's; cleared once it is in
        self._write_timer: asyncio.TimerHandle | None = None
        self._body_started = 0.0    # loop time the body began
        self._body_bytes = 0        # bytes received since then
        self._ops_slot: str | None = None  # the client address, on an operations-only slot
        self._lost: asyncio.Future[None] = self.loop.create_future()  # see connection_events.py
        self._lingering = False     # an error was answered; closing (see _fail)

    # --- the connection -------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._take_ops_slot():
            log.warning("refusing a connection: %d open (HTTP_MAX_CONNECTIONS)", len(self.connections) - 1)
            self._fail(ErrorKind.TOO_MANY_CONNECTIONS, "The server has too many open connections; retry shortly.")
            return
        self._deadline.set_in(self._head_timeout_s, self._head_timed_out)

    def _take_ops_slot(self) -> bool:
        """One of the slots kept for probes and scrapers, one per client address."""
        limits = self.limits
        peer = (self.transport.get_extra_info("peername") or ("?",))[0]
        if len(self.connections) > limits.max_connections + limits.ops_connections or peer in limits.ops_holders:
            return False
        limits.ops_holders.add(peer)
        self._ops_slot = peer
        return True

    @property
    def _head_timeout_s(self) -> float:
        return OPS_HEAD_TIMEOUT_S if self._ops_slot is not None else self.limits.header_timeout_s

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline.stop()
        self._cancel_write_timer()
        if self._ops_slot is not None:
            self.limits.ops_holders.discard(self._ops_slot)
            self._ops_slot = None
        if not self._lost.done():
            self._lost.set_result(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # an error has been answered: read and dropped until the close
        if not self._in_head:
            self._body_bytes += len(data)
        super().data_received(data)
        if self._in_head and self.parser is not None:
            # Counted after parsing, for the request whose head is open now (a chunk that
            # also carries the end of the previous request counts whole: conservative).
            self._head_bytes += len(data)
            self._check_head_size()

    def _check_head_size(self) -> None:
        if self._head_bytes > self.limits.max_header_bytes and not self.transport.is_closing():
            self._fail(ErrorKind.HEADERS_TOO_LARGE, f"The request line and headers are larger than "
                       f"{self.limits.max_header_bytes:,} bytes (HTTP_MAX_HEADER_BYTES).")

    # --- the parser's events ------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {connection_events.EXTENSION: connection_events.extension(self._lost)}
        self._in_head, self._head_bytes = True, 0
        self._deadline.set_in(self._head_timeout_s, self._head_timed_out)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:
            super().on_header(name, value)
            return
        # A chunked body's trailers: bounded like headers, and not passed on.
        self._head_bytes += len(name) + len(value) + 4
        self._check_head_size()

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        if self._ops_slot is not None and not self._is_ops_request():
            self._fail(ErrorKind.TOO_MANY_CONNECTIONS, "The server has too many open connections; retry shortly.")
            return
        self._body_started, self._body_bytes = self.loop.time(), 0
        self._deadline.set_at(self._body_started + self._body_allowed_s(), self._check_body)
        super().on_headers_complete()
        if self.pipeline:  # queued behind a request being answered: reading is paused, nothing to time
            self._deadline.clear()

    def on_message_complete(self) -> None:
        self._deadline.clear()
        super().on_message_complete()

    def _should_upgrade(self) -> bool:
        """No WebSocket on an operations slot, nor on a connection already refused: the
        upgrade would carry the transport off (and an operations slot's release with it)."""
        return self._ops_slot is None and not self.transport.is_closing() and super()._should_upgrade()

    def _is_ops_request(self) -> bool:
        """GET /health or /metrics (read before uvicorn builds the request's scope)."""
        try:
            path = httptools.parse_url(self.url).path
        except httptools.HttpParserInvalidURLError:
            return False
        # Never an upgrade: a WebSocket takes the transport away, and with it the slot's release.
        return self.parser.get_method() == b"GET" and path in OPS_PATHS and not self.parser.should_upgrade()

    # --- the body's time -------------------------------------------------------------------
    def _body_allowed_s(self) -> float:
        """Seconds the body may take so far: HTTP_BODY_TIMEOUT_S at most, and with a minimum
        rate, the grace plus a second per HTTP_BODY_MIN_RATE bytes received."""
        limits = self.limits
        if not limits.body_min_rate:
            return limits.body_timeout_s
        return min(limits.body_timeout_s, limits.body_grace_s + self._body_bytes / limits.body_min_rate)

    def _check_body(self) -> None:
        """Due when the body has taken what it was allowed when last looked at; it may have
        earned more since."""
        if self.transport.is_closing():
            return
        taken = self.loop.time() - self._body_started
        allowed = self._body_allowed_s()
        if taken < allowed:
            self._deadline.set_at(self._body_started + allowed, self._check_body)
        elif allowed >= self.limits.body_timeout_s:
            self._refuse_body(f"The request's body did not arrive within {self.limits.body_timeout_s:g} s "
                              "(HTTP_BODY_TIMEOUT_S).")
        else:
            self._refuse_body(f"The request's body arrived slower than {self.limits.body_min_rate} bytes a "
                              f"second after the first {self.limits.body_grace_s:g} s (HTTP_BODY_MIN_RATE).")

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.limits.write_timeout_s, self._write_timed_out)

    def resume_writing(self) -> None:
        self._cancel_write_timer()
        super().resume_writing()

    def send_400_response(self, msg: str) -> None:
        self._fail(ErrorKind.BAD_REQUEST, f"Malformed HTTP request ({msg.rstrip('.')}).")

    def _cancel_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_timed_out(self) -> None:
        self._write_timer = None
        if not self.transport.is_closing():
            log.info("closing a connection whose client stopped reading for %.0f s (HTTP_WRITE_TIMEOUT_S)",
                     self.limits.write_timeout_s)
            self.transport.abort()

    def _head_timed_out(self) -> None:
        if self.transport.is_closing() or not self._in_head:
            return
        if self._head_bytes == 0:  # idle: nothing to answer
            self.transport.close()
            return
        self._fail(ErrorKind.REQUEST_TIMEOUT, f"The request's headers did not arrive within "
                   f"{self.limits.header_timeout_s:g} s (HTTP_HEADER_TIMEOUT_S).")

    def _refuse_body(self, message: str) -> None:
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # an answer is under way: all we can do is hang up
            return
        if self.cycle is not None:
            self.cycle.disconnected = True  # the app sees the client gone
            self.cycle.message_event.set()
        self._fail(ErrorKind.REQUEST_TIMEOUT, message)

    def _fail(self, kind: ErrorKind, message: str) -> None:
        self._deadline.clear()  # then the answer, and a lingering close (the module's doc)
        self.transport.write(raw_error(kind, message))
        cycle = self.cycle  # an app's answer under way must not write after our FIN
        if (self.transport.is_closing() or not self.transport.can_write_eof()
                or (cycle is not None and not (cycle.response_complete or cycle.disconnected))):
            self.transport.close()
            return
        self._lingering = True
        self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_S, self.transport.close)
