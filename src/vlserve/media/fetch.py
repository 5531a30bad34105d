"""Fetching media from http(s) URLs without becoming a way into the operator's network.

- Every address a host name resolves to is checked by `GuardedResolver`, which hands the
  connector only the addresses the policy allows: the address checked is the address
  connected to (no DNS-rebinding gap between a check and the connect).
- Literal IP hosts, domain allow/deny lists and the scheme are checked on every hop;
  redirects are followed by hand, up to a limit.
- One deadline covers the whole fetch; the byte cap is enforced while the body streams in.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from ..errors import ErrorKind, ServiceError
from .encoding import too_large
from .policy import MediaPolicy

_REDIRECTS = (301, 302, 303, 307, 308)
_GENERIC_TYPES = ("application/octet-stream", "binary/octet-stream", "")


def _private_refusal() -> ServiceError:
    return ServiceError(ErrorKind.IMAGE_FETCH_REFUSED, "The URL points to a private, loopback or reserved "
                        "network address, which this server does not fetch from.")


class GuardedResolver(aiohttp.abc.AbstractResolver):
    """Drops the addresses the policy refuses, so they are never connected to."""

    def __init__(self, policy: MediaPolicy, inner: aiohttp.abc.AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list:
        infos = await self._inner.resolve(host, port, family)
        if host.lower() in self._policy.allow_private_hostnames:
            return infos
        allowed = [info for info in infos if self._policy.address_allowed(info["host"])]
        if not allowed:
            raise _private_refusal()
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def make_fetch_session(policy: MediaPolicy, resolver: aiohttp.abc.AbstractResolver | None = None
                       ) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(policy, resolver), limit=64, use_dns_cache=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=policy.fetch_timeout_s,
                                    sock_read=policy.fetch_timeout_s)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False,
                                 headers={"User-Agent": "vlserve-media-fetch/0.1"})


async def fetch(session: aiohttp.ClientSession, url: str, policy: MediaPolicy, kind: str, max_bytes: int) -> bytes:
    """The body at `url`, an `kind`/* (or generic) resource of at most `max_bytes`."""
    try:
        async with asyncio.timeout(policy.fetch_timeout_s):
            return await _follow(session, url, policy, kind, max_bytes)
    except TimeoutError:
        raise ServiceError(ErrorKind.IMAGE_FETCH_FAILED, f"Fetching the URL took longer than "
                           f"{policy.fetch_timeout_s:g} s (MEDIA_FETCH_TIMEOUT_S).") from None
    except aiohttp.ClientError as exc:
        if isinstance(exc.__cause__, ServiceError):
            raise exc.__cause__ from None
        raise ServiceError(ErrorKind.IMAGE_FETCH_FAILED, f"Could not fetch the URL ({type(exc).__name__}).") from None


async def _follow(session: aiohttp.ClientSession, url: str, policy: MediaPolicy, kind: str, max_bytes: int) -> bytes:
    for _hop in range(policy.max_redirects + 1):
        check_url(url, policy)
        async with session.get(url, allow_redirects=False) as resp:
            if resp.status in _REDIRECTS and "Location" in resp.headers:
                url = str(resp.url.join(URL(resp.headers["Location"])))
                continue
            if resp.status != 200:
                raise ServiceError(ErrorKind.IMAGE_FETCH_FAILED, f"The URL answered HTTP {resp.status}.")
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if not ctype.startswith(f"{kind}/") and ctype not in _GENERIC_TYPES:
                raise ServiceError(ErrorKind.UNSUPPORTED_MEDIA, f"The URL returned {ctype!r}, not {kind} data.")
            return await _read_capped(resp, max_bytes)
    raise ServiceError(ErrorKind.IMAGE_FETCH_REFUSED,
                       f"The URL redirected more than {policy.max_redirects} times (MEDIA_MAX_REDIRECTS).")


def check_url(url: str, policy: MediaPolicy) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServiceError(ErrorKind.IMAGE_FETCH_REFUSED, "Only http(s) URLs are fetched.")
    host = parts.hostname
    policy.check_domain(host)
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return  # a name: GuardedResolver checks every address it resolves to
    if not policy.address_allowed(host):
        raise _private_refusal()


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise too_large("The file at that URL", limit)
    chunks, total = [], 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > limit:  # enforced while streaming: an endless body stops here
            raise too_large("The file at that URL", limit)
        chunks.append(chunk)
    return b"".join(chunks)
