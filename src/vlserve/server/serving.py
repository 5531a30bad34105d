"""Running the app under uvicorn with a graceful, bounded shutdown.

On SIGTERM or SIGINT: stop accepting connections, let in-flight requests finish for
DRAIN_TIMEOUT_S, then end every stream still open with a final error event (clients see
why their answer stopped; the openai SDK raises it), and exit. uvicorn's own signal
capture is turned off: it re-raises the signal after shutdown, which would kill a
launcher before it has stopped its engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import uvicorn

from vlserve.config import Settings
from vlserve.server.http_protocol import ConnectionLimits, guarded_protocol

log = logging.getLogger("vlserve")
T = TypeVar("T")

# Time between aborting the streams and uvicorn's hard stop, for the final events to leave.
ABORT_MARGIN_S = 3.0
# Allocations between collections of the young generation (Python's default: 700). A
# request makes hundreds, so the default collected every few requests.
YOUNG_COLLECTION_EVERY = 10_000


def settle_collector() -> None:
    """Once started, leave what lives as long as the process (modules, the app, a local
    model) out of garbage collection, and collect the young generation less often.
    Collections scanning that heap again and again were ~15% of a small request's CPU
    (bench/RESULTS.md)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, old)


class Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        yield

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)  # the app's lifespan has started: the engine is up
        settle_collector()


def make_server(app, settings: Settings) -> Server:
    """uvicorn with the connection limits of http_server.py (header size and time, body time,
    idle and open connections)."""
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            access_log=False, http=guarded_protocol(ConnectionLimits(settings)),
                            ws="none",  # no WebSocket routes: no upgrade path past the HTTP limits
                            timeout_keep_alive=math.ceil(settings.http_idle_timeout_s),
                            timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s + ABORT_MARGIN_S))
    return Server(config)


def install_drain(server: Server, app, drain_s: float, on_signal: Callable[[int], None] | None = None) -> None:
    """SIGTERM/SIGINT: stop accepting now, end open streams after `drain_s`."""
    loop = asyncio.get_running_loop()

    def handle(sig: int) -> None:
        log.info("%s: draining in-flight requests for up to %.0f s", signal.Signals(sig).name, drain_s)
        server.should_exit = True
        state = getattr(app.state, "vlserve", None)
        if state is not None:
            loop.call_later(drain_s, state.inference.abort_streams)
        if on_signal is not None:
            on_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle, sig)


async def serve(app, settings: Settings) -> None:
    server = make_server(app, settings)
    install_drain(server, app, settings.drain_timeout_s)
    await server.serve()


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop where it is installed (measured in bench/RESULTS.md), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
