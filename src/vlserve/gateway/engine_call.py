"""One call to the engine, the same for every route.

`/v1/chat/completions`, `/infer`, `/analyze` (each engine call of a task) and anything
added later reach the engine only through `Inference`:

- admission: a place among MAX_CONCURRENT_REQUESTS, or 429 when none is to be had;
- the engine call or stream;
- cancellation when the client goes away (while queued, waiting or generating);
- one more try with smaller images when the engine could not fit the prompt, before any
  byte reached the client (smaller_images.py; MEDIA_RETRY_SMALLER);
- the request's token usage into its `Observation` (metrics and the request log);
- for streams, release of the place when the stream closes, whatever closed it (the
  response class in `routes/streaming.py` closes it in its own `finally`), and
  registration so a shutdown can end open streams with a final error event.

Routes only translate HTTP to and from this. Nothing here imports a web framework: the
route hands in `client_gone`, an awaitable that finishes when the client disconnects.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TypeVar, cast

from vlserve.admission import Admission
from vlserve.engines.base import Engine, EngineRequest, EngineStream
from vlserve.errors import ErrorKind, ServiceError
from vlserve.gateway.observation import Observation
from vlserve.gateway.smaller_images import PIXELS_KEPT, USAGE_NOTE, ImageShrinker, note_in_usage
from vlserve.openai_types import Completion, Usage, usage_from
from vlserve.tenancy.quota import Ticket

log = logging.getLogger("vlserve")
T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before its answer was ready; the work has been cancelled."""


@dataclass
class CallContext:
    """What an engine call needs to know about the HTTP request it serves."""

    obs: Observation
    client_gone: Callable[[], Awaitable[None]]
    ticket: Ticket | None = None  # the caller's limits and usage; None outside the HTTP edge (tests)
    # Done when the client's connection is lost, where the server tells so itself (vlserve's
    # own HTTP protocol does); `client_gone` is watched where it does not.
    connection_lost: asyncio.Future[None] | None = None


class Inference:
    def __init__(self, engine: Engine, admission: Admission, shrinker: ImageShrinker | None = None) -> None:
        self.engine = engine
        self.admission = admission
        self._shrinker = shrinker  # None: a prompt that does not fit is not retried smaller
        self._open: set[EngineStream] = set()
        self.retried_smaller = 0  # requests sent again with smaller images (a metric)

    async def complete(self, request: EngineRequest, ctx: CallContext) -> Completion:
        """A whole answer, inside an admission place."""
        ctx.obs.model = request.model
        entry = await _charge(request, ctx.ticket)
        try:
            result = await until_gone(self._admitted_answer(request, ctx.obs), ctx)
        except ServiceError:
            _nothing_spent(ctx.ticket, entry)  # refused: the reservation is given back
            raise  # (a client that left keeps its reservation: the engine worked until then)
        usage = usage_from(result.get("usage"))
        ctx.obs.add_usage(usage)
        if ctx.ticket is not None and entry is not None:
            ctx.ticket.spent(entry, *_tokens_used(usage, request, 0))
        reported = result.get("usage")
        if ctx.obs.images_shrunk is not None and isinstance(reported, dict):
            cast(dict[str, object], reported)[USAGE_NOTE] = ctx.obs.images_shrunk
        return result

    async def _admitted_answer(self, request: EngineRequest, obs: Observation) -> Completion:
        release = await self.admission.acquire()
        try:
            return await self._fitting(self.engine.complete, request, obs)
        finally:
            release()

    async def stream(self, request: EngineRequest, ctx: CallContext) -> EngineStream:
        """An open stream that holds an admission place until it is closed."""
        ctx.obs.model = request.model
        entry = await _charge(request, ctx.ticket)
        try:
            stream = await until_gone(self._admitted_stream(request, ctx.obs), ctx)
        except ServiceError:
            _nothing_spent(ctx.ticket, entry)
            raise
        if ctx.obs.images_shrunk is not None:
            stream.map_chunks(note_in_usage)
        stream.add_close_callback(lambda: ctx.obs.add_usage(stream.usage))
        if ctx.ticket is not None and entry is not None:
            ticket = ctx.ticket
            stream.add_close_callback(lambda: ticket.spent(entry, *_tokens_used(stream.usage, request,
                                                                                stream.chunks_sent)))
        self._open.add(stream)
        stream.add_close_callback(lambda: self._open.discard(stream))
        return stream

    async def _admitted_stream(self, request: EngineRequest, obs: Observation) -> EngineStream:
        release = await self.admission.acquire()
        try:
            stream = await self._fitting(self.engine.open_stream, request, obs)
        except BaseException:
            release()
            raise
        stream.add_close_callback(release)
        return stream

    async def _fitting(self, call: Callable[[EngineRequest], Awaitable[T]], request: EngineRequest,
                       obs: Observation) -> T:
        """`call(request)`, and once more with smaller images if the engine could not fit it."""
        try:
            return await call(request)
        except ServiceError as error:
            if error.code == ErrorKind.CONTEXT_TOO_LONG.code:
                error.message += prompt_holds(request)
            if self._shrinker is None or not error.prompt_too_big:
                raise
            smaller = await self._shrinker.smaller(request)
            if smaller is None:  # text only: nothing smaller to send
                raise
            log.info("the engine could not fit request %s (%s); sending its images again at %g of their pixels",
                     obs.request_id, error.code, PIXELS_KEPT)
        self.retried_smaller += 1
        obs.images_shrunk = PIXELS_KEPT
        return await call(smaller)

    @property
    def open_streams(self) -> int:
        return len(self._open)

    def abort_streams(self) -> None:
        """Shutdown: end every open stream at its next chunk with a final error event."""
        if self._open:
            log.warning("drain time is up: ending %d open streams with an error event", len(self._open))
        for stream in list(self._open):
            stream.abort()


async def _charge(request: EngineRequest, ticket: Ticket | None) -> str | None:
    """The caller may use this model, and its limits have room for this call's tokens and
    images (reserved now, settled when the response is over)."""
    if ticket is None:
        return None
    if not ticket.caller.may_use(request.model, ticket.aliases):
        allowed = ", ".join(sorted(ticket.caller.key.models or ()))
        raise ServiceError(ErrorKind.MODEL_NOT_ALLOWED, f"The key {ticket.caller.key.name!r} may not use the "
                           f"model {request.model!r}; it may use: {allowed}.", param="model")
    ticket.model = request.model
    return await ticket.reserve(request.token_bound or 0, request.visuals, request.image_ids)


def prompt_holds(request: EngineRequest) -> str:
    """What fills a prompt too long for the context, for the refusal's message: a front-end
    that sends dozens of tool definitions with every chat should be told so."""
    tools = request.body.get("tools") or []
    parts = []
    if tools:
        size = len(json.dumps(tools))
        parts.append(f"{len(tools)} tool definition{'s' if len(tools) != 1 else ''} ({size / 1000:,.1f} KB of "
                     "JSON; a front-end's own tools, such as Open WebUI's built-in ones, can be turned off)")
    if request.visuals:
        parts.append(f"{request.visuals} image{'s' if request.visuals != 1 else ''} or video"
                     f"{'s' if request.visuals != 1 else ''}")
    return f" The request holds {' and '.join(parts)}." if parts else ""


def _nothing_spent(ticket: Ticket | None, entry: str | None) -> None:
    if ticket is not None and entry is not None:
        ticket.spent(entry, 0, 0)


def _tokens_used(usage: Usage | None, request: EngineRequest, chunks_sent: int) -> tuple[int, int]:
    """(prompt, completion) tokens: the engine's count, or, for a stream the client left
    before the engine counted, the prompt's bound and one token per chunk sent."""
    if usage is not None:
        return usage["prompt_tokens"], usage["completion_tokens"]
    prompt_bound = (request.token_bound or 0) - (request.max_tokens or 0)
    return max(0, prompt_bound), chunks_sent


async def until_gone(work: Coroutine[object, None, T], ctx: CallContext) -> T:
    """Await `work`; if the client disconnects first, cancel it and raise ClientGone.

    `work` runs in the caller's own task, cancelled by a callback on the connection's
    `connection_lost` future; without one, on a watcher task that waits for the disconnect
    on `receive` (a task per request was a measurable part of a small request's cost).
    """
    caller = asyncio.current_task()
    assert caller is not None
    watcher = None
    lost = ctx.connection_lost
    if lost is None:
        lost = watcher = asyncio.get_running_loop().create_task(_returned(ctx.client_gone))
    cancel = _CancelWhenLost(caller)
    lost.add_done_callback(cancel)
    try:
        result = await work  # a cancellation runs work's own cleanup (release, closing a connection)
    except asyncio.CancelledError:
        if cancel.fired and caller.uncancel() == 0:  # ours, not a cancellation from outside
            raise ClientGone() from None
        raise
    finally:
        cancel.active = False  # a callback already scheduled must not cancel what comes next
        lost.remove_done_callback(cancel)
        if watcher is not None:
            watcher.cancel()
    if cancel.fired:  # `work` swallowed the cancellation: its result stands (an open stream must
        caller.uncancel()  # be returned to be closed), and the response notices the client left
    return result


async def _returned(client_gone: Callable[[], Awaitable[None]]) -> None:
    await client_gone()


class _CancelWhenLost:
    """The done-callback that cancels a request's task when its client has gone."""

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.active = True
        self.fired = False

    def __call__(self, lost: asyncio.Future[None]) -> None:
        if self.active and not lost.cancelled():
            self.fired = True
            self.task.cancel()
