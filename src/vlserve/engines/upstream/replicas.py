"""The upstream replicas: which answer, how busy each is, and which to send to next.

A background probe asks each replica for `/v1/models` (every second while any is down,
every PROBE_INTERVAL_READY_S otherwise). A replica that refuses a connection or answers
5xx while another one is ready is taken out at once and comes back when a probe
succeeds; the last ready replica is only ever taken out by the probe. Requests go to the
ready replica, among those that serve the requested model, with the fewest requests in
flight. A request's place in a replica's in-flight count is a `Lease`: taken when the
replica is picked, given back once, whatever ends the request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from vlserve.engines.base import ReplicaState
from vlserve.errors import ErrorKind, ServiceError

log = logging.getLogger("vlserve.upstream")

PROBE_INTERVAL_LOADING_S = 1.0
PROBE_INTERVAL_READY_S = 10.0


@dataclass(eq=False)
class Replica:
    base_url: str
    ready: bool = False
    models: list[str] = field(default_factory=list)
    last_error: str = "not probed yet"
    in_flight: int = 0
    owned_by: str = ""  # what its /v1/models says of its models: "vllm", "lmdeploy", "vlserve"...
    # Optional fields the gateway adds that this replica refused (learned, never sent again).
    refused_fields: set[str] = field(default_factory=set)

    def state(self) -> ReplicaState:
        return ReplicaState(self.base_url, self.ready, self.in_flight, tuple(self.models),
                            None if self.ready else self.last_error)


class Lease:
    """One request's place in a replica's in-flight count."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        replica.in_flight += 1
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self.replica.in_flight -= 1


class ReplicaSet:
    def __init__(self, urls: list[str], probe_timeout_s: float) -> None:
        self.replicas = [Replica(url) for url in urls]
        self._probe_timeout = aiohttp.ClientTimeout(total=probe_timeout_s)
        self._ties = itertools.count()
        self._ready_event = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self, session: aiohttp.ClientSession) -> None:
        self._task = asyncio.create_task(self._probe_forever(session))

    def close(self) -> None:
        if self._task:
            self._task.cancel()

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready_event.wait(), timeout)
            return True
        except TimeoutError:
            return False

    # --- health -------------------------------------------------------------------------
    async def _probe_forever(self, session: aiohttp.ClientSession) -> None:
        while True:
            await asyncio.gather(*(self._probe(session, r) for r in self.replicas))
            self._update_event()
            all_ready = all(r.ready for r in self.replicas)
            await asyncio.sleep(PROBE_INTERVAL_READY_S if all_ready else PROBE_INTERVAL_LOADING_S)

    async def _probe(self, session: aiohttp.ClientSession, replica: Replica) -> None:
        try:
            async with session.get(f"{replica.base_url}/v1/models", timeout=self._probe_timeout) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                cards = [m for m in body.get("data", []) if isinstance(m, dict) and m.get("id")]
                models = [card["id"] for card in cards]
                if not models:
                    raise ValueError("no models listed")
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, AttributeError) as exc:
            if replica.ready:
                log.warning("upstream %s stopped answering: %s", replica.base_url, exc)
            replica.ready, replica.last_error = False, f"{type(exc).__name__}: {exc}".rstrip(": ")
            return
        if not replica.ready:
            log.info("upstream %s ready, models %s", replica.base_url, models)
        replica.ready, replica.models, replica.last_error = True, models, ""
        replica.owned_by = str(cards[0].get("owned_by") or "")

    def _update_event(self) -> None:
        if any(r.ready for r in self.replicas):
            self._ready_event.set()
        else:
            self._ready_event.clear()

    def take_out(self, replica: Replica, reason: str) -> None:
        if replica.ready:
            log.warning("upstream %s taken out: %s", replica.base_url, reason)
        replica.ready, replica.last_error = False, reason
        self._update_event()

    def mark_down(self, reason: str) -> None:
        for replica in self.replicas:
            self.take_out(replica, reason)

    # --- routing ------------------------------------------------------------------------
    def lease(self, model: str, exclude: Sequence[Replica] = ()) -> Lease:
        """A place on the least busy ready replica that serves `model`."""
        candidates = [r for r in self.replicas if r.ready and model in r.models and r not in exclude]
        if not candidates:
            raise ServiceError(ErrorKind.ENGINE_UNAVAILABLE, f"No model engine serving {model!r} is available; "
                               "retry shortly.", headers={"Retry-After": "5"})
        fewest = min(r.in_flight for r in candidates)
        ties = [r for r in candidates if r.in_flight == fewest]
        return Lease(ties[next(self._ties) % len(ties)])

    def others_ready(self, replica: Replica, model: str) -> bool:
        return any(r.ready and r is not replica and model in r.models for r in self.replicas)
