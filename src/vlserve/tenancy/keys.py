"""API keys with names and limits: the key ring the gateway authenticates against.

Keys come from `API_KEYS`, and from `API_KEYS_FILE`: one key per line, or, when the
file's name ends in `.toml`, named keys with limits (README, "Keys, limits and usage").
A key is looked up by its SHA-256: a dict lookup whose time says nothing about how close
a guess was, and a file may hold only the hashes (`key_sha256`), never the secrets.

A bad file is a `KeyFileError` whose one-line message names the key and the field.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger("vlserve")

WATCH_EVERY_S = 2.0  # how often API_KEYS_FILE's stamp is looked at
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_USER_CHARS = 256  # a longer user header is cut: it names a row of usage, not a document


class KeyFileError(ValueError):
    """API_KEYS_FILE cannot be used; the message is one line naming the key and field."""


@dataclass(frozen=True)
class Limits:
    """What one key (or one user of a key) may use; None is no limit."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    images_per_day: int | None = None

    @property
    def any(self) -> bool:
        return not (self.requests_per_minute is None and self.tokens_per_minute is None
                    and self.max_concurrent is None and self.images_per_day is None)

    @property
    def per_request(self) -> bool:
        """Limits checked when a request arrives (the others when it reaches the engine)."""
        return self.requests_per_minute is not None or self.max_concurrent is not None


@dataclass(frozen=True)
class ApiKey:
    name: str                 # the TOML table's name: what logs, metrics and usage say, never the secret
    sha256: str               # hex digest of the key
    limits: Limits = Limits()
    user_header: str | None = None  # lower-case header name; only this key's requests may name a user
    per_user: Limits | None = None
    models: frozenset[str] | None = None  # ids or aliases it may use; None: every model
    admin: bool = False


ANONYMOUS = ApiKey(name="anonymous", sha256="")  # every request when no key is configured


@dataclass(frozen=True)
class KeyRing:
    by_hash: dict[str, ApiKey] = field(default_factory=dict)

    @property
    def required(self) -> bool:
        """Keys are configured: a request without a right one is refused."""
        return bool(self.by_hash)

    def find(self, secret: bytes) -> ApiKey | None:
        return self.by_hash.get(hashlib.sha256(secret).hexdigest())

    def __len__(self) -> int:
        return len(self.by_hash)


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def unnamed_key(secret: str, defaults: Limits) -> ApiKey:
    digest = sha256_hex(secret)
    return ApiKey(name=f"key-{digest[:8]}", sha256=digest, limits=defaults)


# --- the TOML form ----------------------------------------------------------------------

class _LimitFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    max_concurrent: int | None = Field(None, ge=1)
    images_per_day: int | None = Field(None, ge=0)


class _KeyTable(_LimitFields):
    key: str | None = Field(None, min_length=8)
    key_sha256: str | None = Field(None, pattern=_SHA256.pattern)
    user_header: str | None = Field(None, pattern=r"^[A-Za-z0-9-]{1,64}$")
    per_user: _LimitFields | None = None
    models: list[str] | None = None
    admin: bool = False


def _limits(table: _LimitFields, defaults: Limits) -> Limits:
    given = table.model_dump(include=set(_LimitFields.model_fields), exclude_unset=True)
    return Limits(**{**defaults.__dict__, **given})


def _parse_table(name: str, raw: Any, defaults: Limits) -> ApiKey:
    try:
        table = _KeyTable.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "(table)"
        raise KeyFileError(f"key {name!r}, field {where}: {error['msg']}") from None
    if (table.key is None) == (table.key_sha256 is None):
        raise KeyFileError(f"key {name!r}: give exactly one of `key` and `key_sha256`")
    if table.per_user is not None and table.user_header is None:
        raise KeyFileError(f"key {name!r}, field per_user: per-user limits need `user_header`")
    digest = table.key_sha256 or sha256_hex(table.key or "")
    return ApiKey(name=name, sha256=digest, limits=_limits(table, defaults),
                  user_header=table.user_header.lower() if table.user_header else None,
                  per_user=_limits(table.per_user, Limits()) if table.per_user else None,
                  models=frozenset(table.models) if table.models is not None else None, admin=table.admin)


def _parse_toml(text: str) -> tuple[Limits, list[ApiKey]]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KeyFileError(f"not valid TOML: {exc}") from None
    unknown = set(document) - {"defaults", "keys"}
    if unknown:
        raise KeyFileError(f"unknown table {sorted(unknown)[0]!r}: the file has [defaults] and [keys.<name>]")
    try:
        defaults = _limits(_LimitFields.model_validate(document.get("defaults", {})), Limits())
    except ValidationError as exc:
        error = exc.errors()[0]
        raise KeyFileError(f"[defaults], field {'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    keys = document.get("keys", {})
    if not isinstance(keys, dict):
        raise KeyFileError("`keys` must be tables: [keys.<name>]")
    return defaults, [_parse_table(name, raw, defaults) for name, raw in keys.items()]


def _plain_lines(text: str) -> list[str]:
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def load_key_ring(api_keys: Iterable[str], keys_file: Path | None) -> KeyRing:
    """The keys of API_KEYS and API_KEYS_FILE; raises KeyFileError on a bad file."""
    defaults, named = Limits(), list[ApiKey]()
    plain = list(api_keys)
    if keys_file is not None:
        try:
            text = keys_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"cannot read {keys_file}: {exc}") from None
        if keys_file.name.endswith(".toml"):
            defaults, named = _parse_toml(text)
        else:
            plain += _plain_lines(text)
    if keys_file is not None and not named and not plain:
        # An empty file would open the server to anyone (no keys: no key check), at start
        # or, worse, on a reload: refused, so a reload keeps the keys in force.
        raise KeyFileError("no keys in the file; without keys the server would need none")
    ring: dict[str, ApiKey] = {}
    for key in [*named, *(unnamed_key(secret, defaults) for secret in plain)]:
        if key.sha256 in ring:
            raise KeyFileError(f"key {key.name!r} is the same secret as key {ring[key.sha256].name!r}")
        ring[key.sha256] = key
    names = [key.name for key in ring.values()]
    if len(set(names)) != len(names):
        raise KeyFileError("two keys have the same name")
    return KeyRing(ring)


class KeySource:
    """The key ring in force, read again on SIGHUP or when API_KEYS_FILE changes.

    A reload swaps the whole ring at once: a request in flight keeps the key it was
    admitted with. A file that no longer parses leaves the ring as it was, and says why.
    """

    def __init__(self, api_keys: Iterable[str], keys_file: Path | None) -> None:
        self._api_keys = list(api_keys)
        self.keys_file = keys_file
        self._stamp = self._file_stamp()
        self.ring = load_key_ring(self._api_keys, keys_file)

    def _file_stamp(self) -> tuple[float, int, int] | None:
        if self.keys_file is None:
            return None
        try:
            stat = self.keys_file.stat()
        except OSError:
            return None
        return stat.st_mtime, stat.st_size, stat.st_ino

    def reload(self) -> bool:
        self._stamp = self._file_stamp()
        try:
            ring = load_key_ring(self._api_keys, self.keys_file)
        except KeyFileError as exc:
            log.error("API_KEYS_FILE %s was not reloaded: %s; the %d keys already loaded stay in force",
                      self.keys_file, exc, len(self.ring))
            return False
        self.ring = ring
        log.info("API keys reloaded from %s: %d keys", self.keys_file, len(ring))
        return True

    def reload_if_changed(self) -> bool:
        if self.keys_file is None or self._file_stamp() == self._stamp:
            return False
        return self.reload()

    async def watch(self, every_s: float = WATCH_EVERY_S) -> None:
        """Reload when the file changes (an editor's save, a mounted secret's update)."""
        while True:
            await asyncio.sleep(every_s)
            self.reload_if_changed()
