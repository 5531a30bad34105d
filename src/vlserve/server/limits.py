"""Each key's limits and usage at the HTTP edge, as pure ASGI middleware.

For a request to an engine route it makes the request's `Ticket` (tenancy/quota.py),
admits it before the body is read (requests per minute, places in flight: a refused
client costs no parsing and no image work), has OpenAI's `x-ratelimit-*` headers added to
the answer of a key with limits (by Observe, the one layer that touches the response's
messages: a second wrapper of `send` would cost every streamed chunk), and when the
response is over settles the ticket with the status the log says (499 for a client that
left) and the tokens used.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from vlserve.errors import ServiceError
from vlserve.gateway.observation import Observation
from vlserve.server.error_handlers import CLIENT_CLOSED_REQUEST, json_error
from vlserve.tenancy.limits import WindowState
from vlserve.tenancy.quota import ANONYMOUS_CALLER, Quota

# Routes that use the engine, or the PDF workers (/pages): limited and counted per key.
ENGINE_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses", "/infer", "/infer/upload",
                           "/analyze", "/analyze/upload", "/pages"})

RATE_LIMIT_HEADERS = [f"x-ratelimit-{what}-{unit}" for unit in ("requests", "tokens")
                      for what in ("limit", "remaining", "reset")]


def duration(seconds: float) -> str:
    """OpenAI's reset format: "20ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    return f"{int(seconds // 60)}m{int(seconds % 60)}s"


def window_headers(state: WindowState) -> list[tuple[bytes, bytes]]:
    headers = []
    if state.requests_limit is not None:
        headers += [(b"x-ratelimit-limit-requests", str(state.requests_limit).encode()),
                    (b"x-ratelimit-remaining-requests", str(state.requests_remaining).encode()),
                    (b"x-ratelimit-reset-requests", duration(state.requests_reset_s).encode())]
    if state.tokens_limit is not None:
        headers += [(b"x-ratelimit-limit-tokens", str(state.tokens_limit).encode()),
                    (b"x-ratelimit-remaining-tokens", str(state.tokens_remaining).encode()),
                    (b"x-ratelimit-reset-tokens", duration(state.tokens_reset_s).encode())]
    return headers


class LimitsGate:
    def __init__(self, app: ASGIApp, quota: Quota, aliases: Callable[[], dict[str, str]]) -> None:
        self.app = app
        self.quota = quota
        self.aliases = aliases  # the catalog's model aliases, for keys with a model allow-list

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in ENGINE_ROUTES:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        obs: Observation = state.setdefault("observation", Observation("-"))
        ticket = self.quota.ticket(state.get("caller", ANONYMOUS_CALLER))
        if ticket.caller.key.models is not None:
            ticket.aliases = self.aliases()
        state["ticket"] = ticket
        if ticket.limited:  # the headers say what is left once the checks have run
            obs.more_headers = lambda: window_headers(ticket.windows) if ticket.windows is not None else []
        try:
            await ticket.admit()
        except ServiceError as refusal:
            await json_error(refusal)(scope, receive, send)
            await ticket.finish(refusal.status)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            await ticket.finish(CLIENT_CLOSED_REQUEST if obs.client_left else obs.status)
