"""What vlserve's HTTP protocol tells the app about a request's connection.

An ASGI extension (the scope's "extensions", whose values are dicts by the spec): under
`vlserve.connection`, `lost` is a future done once the client's connection is lost, so
the app learns of a disconnect without a task waiting on `receive`. Other servers do not
set it; the app then watches `receive` (gateway/engine_call.until_gone).
"""

from __future__ import annotations

import asyncio

from starlette.types import Scope

EXTENSION = "vlserve.connection"


def extension(lost: asyncio.Future[None]) -> dict[object, object]:
    """The extension's value for a connection whose loss is `lost`."""
    return {"lost": lost}


def connection_lost(scope: Scope) -> asyncio.Future[None] | None:
    """The request's connection's loss, where the server tells of it."""
    found = scope.get("extensions", {}).get(EXTENSION)
    return found["lost"] if found is not None else None
