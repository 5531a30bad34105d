"""Usage per key, user, model and UTC day, and the embedded store's file that keeps it.

Each finished request adds one `UsageDelta`. The embedded store adds deltas to a SQLite
file (USAGE_FILE) about once a second and when the gateway stops, as `+=` updates, so
several gateways on one machine may share the file and a restart loses nothing that was
written; Redis keeps the same counters in one hash per day (redis_store.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import date, timedelta
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger("vlserve.usage")

FLUSH_EVERY_S = 1.0
MAX_KEPT = 100_000  # deltas kept in memory while the file cannot be written


class UsageKey(NamedTuple):
    """Where a request's usage is counted. A named tuple, not a frozen dataclass: one is made
    and hashed for every request, and a tuple's making and hashing are C."""

    day: str            # YYYY-MM-DD, UTC
    key: str            # the key's name
    user: str | None
    model: str | None


@dataclass
class UsageCounts:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0

    def add(self, other: UsageCounts) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.images += other.images
        self.errors_4xx += other.errors_4xx
        self.errors_5xx += other.errors_5xx


COUNT_FIELDS = tuple(f.name for f in fields(UsageCounts))


class UsageDelta(NamedTuple):
    where: UsageKey
    counts: UsageCounts


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_day_named: tuple[int, str] = (-1, "")  # (day number, its ISO date): one date made per day


def today() -> str:
    """Today's UTC date, YYYY-MM-DD (each request's usage row is keyed by it)."""
    global _day_named
    day = int(time.time() // 86400)  # POSIX days are 86,400 s: no leap seconds
    if day != _day_named[0]:
        _day_named = (day, date.fromordinal(_EPOCH_ORDINAL + day).isoformat())
    return _day_named[1]


def delta_for(key: str, user: str | None, model: str | None, status: int, prompt_tokens: int,
              completion_tokens: int, images: int) -> UsageDelta:
    """One finished request. A client that left (499) is not an error of the service."""
    counts = UsageCounts(requests=1, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                         images=images, errors_4xx=int(400 <= status < 500 and status != 499),
                         errors_5xx=int(status >= 500))
    return UsageDelta(UsageKey(today(), key, user, model), counts)


def days(start: date, end: date) -> list[str]:
    return [(start + timedelta(n)).isoformat() for n in range((end - start).days + 1)]


def merge(deltas: Iterable[UsageDelta]) -> dict[UsageKey, UsageCounts]:
    rows: dict[UsageKey, UsageCounts] = {}
    for delta in deltas:
        rows.setdefault(delta.where, UsageCounts()).add(delta.counts)
    return rows


def as_json_rows(rows: dict[UsageKey, UsageCounts]) -> list[dict[str, object]]:
    """The /admin/usage rows, ordered by day, key, user, model."""
    out = []
    for where in sorted(rows, key=lambda k: (k.day, k.key, k.user or "", k.model or "")):
        counts = rows[where]
        out.append({**where._asdict(), "requests": counts.requests, "prompt_tokens": counts.prompt_tokens,
                    "completion_tokens": counts.completion_tokens, "images": counts.images,
                    "errors": {"4xx": counts.errors_4xx, "5xx": counts.errors_5xx}})
    return out


def as_csv(rows: list[dict[str, object]]) -> str:
    columns = ["day", "key", "user", "model", "requests", "prompt_tokens", "completion_tokens", "images",
               "errors_4xx", "errors_5xx"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        errors = row["errors"]
        assert isinstance(errors, dict)
        flat = {**row, "errors_4xx": errors["4xx"], "errors_5xx": errors["5xx"]}
        writer.writerow(["" if flat[c] is None else flat[c] for c in columns])
    return out.getvalue()


_SCHEMA = f"""CREATE TABLE IF NOT EXISTS usage (
    day TEXT NOT NULL, key TEXT NOT NULL, user TEXT NOT NULL, model TEXT NOT NULL,
    {", ".join(f"{name} INTEGER NOT NULL DEFAULT 0" for name in COUNT_FIELDS)},
    PRIMARY KEY (day, key, user, model))"""
_ADD = (f"INSERT INTO usage (day, key, user, model, {', '.join(COUNT_FIELDS)}) "
        f"VALUES (?, ?, ?, ?, {', '.join('?' for _ in COUNT_FIELDS)}) "
        f"ON CONFLICT (day, key, user, model) DO UPDATE SET "
        f"{', '.join(f'{name} = {name} + excluded.{name}' for name in COUNT_FIELDS)}")


class UsageFile:
    """Usage in a SQLite file; `None` for a path keeps it in memory only (USAGE_FILE=off)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._pending: list[UsageDelta] = []
        self._flusher: asyncio.Task[None] | None = None
        self._memory: dict[UsageKey, UsageCounts] = {}  # the whole record when there is no file
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.closing(self._connect()) as db, db:
                    db.execute(_SCHEMA)
            except (OSError, sqlite3.Error) as exc:  # a read-only root, a full disk: serve anyway
                log.warning("usage cannot be written to %s (%s): it is kept in memory only, and a restart loses "
                            "it; set USAGE_FILE to a writable path (or off)", path, exc)
                self.path = None

    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None
        db = sqlite3.connect(self.path, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def add(self, delta: UsageDelta) -> None:
        if self.path is None:
            self._memory.setdefault(delta.where, UsageCounts()).add(delta.counts)
            return
        self._pending.append(delta)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_EVERY_S)  # a second's deltas in one transaction
        await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending or self.path is None:
            return
        try:
            await asyncio.to_thread(self._write, merge(pending))
        except sqlite3.Error as exc:  # a full disk, a locked file: kept for the next flush
            log.error("usage could not be written to %s (%s); kept to try again", self.path, exc)
            self._pending = pending[-MAX_KEPT:] + self._pending

    def _write(self, rows: dict[UsageKey, UsageCounts]) -> None:
        with contextlib.closing(self._connect()) as db, db:
            db.executemany(_ADD, [(k.day, k.key, k.user or "", k.model or "",
                                   *(getattr(c, name) for name in COUNT_FIELDS)) for k, c in rows.items()])

    async def rows(self, start: date, end: date) -> dict[UsageKey, UsageCounts]:
        if self.path is None:
            wanted = set(days(start, end))
            return {k: c for k, c in self._memory.items() if k.day in wanted}
        await self.flush()
        return await asyncio.to_thread(self._read, start.isoformat(), end.isoformat())

    def _read(self, start: str, end: str) -> dict[UsageKey, UsageCounts]:
        with contextlib.closing(self._connect()) as db:
            found = db.execute(f"SELECT day, key, user, model, {', '.join(COUNT_FIELDS)} FROM usage "
                               "WHERE day BETWEEN ? AND ?", (start, end)).fetchall()
        return {UsageKey(day, key, user or None, model or None): UsageCounts(*counts)
                for day, key, user, model, *counts in found}

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        await self.flush()
