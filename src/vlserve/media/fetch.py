"""Fetching media from http(s) URLs without becoming a way into the operator's network.

- The URL is parsed by the same parser the HTTP client uses (yarl), so the host checked
  is the host connected to: an IP written with Unicode dots or fullwidth digits is
  checked as the IP literal it becomes, not as a "name".
- Every address is checked twice: `GuardedResolver` hands the connector only the
  addresses the policy allows (no DNS-rebinding gap between a check and the connect),
  and the connector's socket factory checks the address of every socket it is about to
  connect, whatever form the URL took (IP literals never reach a resolver).
- Domain allow/deny lists and the scheme are checked on every hop; redirects are
  followed by hand, up to a limit; a malformed `Location` is the URL's failure, not ours.
- One deadline covers the whole fetch; the byte cap is enforced while the body streams in.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import aiohttp
from yarl import URL

from vlserve.errors import ErrorKind, ServiceError
from vlserve.media.encoding import too_large
from vlserve.media.policy import MediaPolicy

_REDIRECTS = (301, 302, 303, 307, 308)
_GENERIC_TYPES = ("application/octet-stream", "binary/octet-stream", "")


def _private_refusal() -> ServiceError:
    return ServiceError(ErrorKind.IMAGE_FETCH_REFUSED, "The URL points to a private, loopback or reserved "
                        "network address, which this server does not fetch from.")


class RefusedAddress(OSError):
    """Raised by the socket factory instead of connecting to an address the policy refuses."""


class GuardedResolver(aiohttp.abc.AbstractResolver):
    """Drops the addresses the policy refuses, so they are never connected to."""

    def __init__(self, policy: MediaPolicy, inner: aiohttp.abc.AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or aiohttp.ThreadedResolver()
        # Addresses that host names the operator allowed (MEDIA_ALLOW_PRIVATE_HOSTS) resolved
        # to: the socket check lets these through, and only these, among private ones.
        self.trusted: set[str] = set()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list:
        infos = await self._inner.resolve(host, port, family)
        if host.lower() in self._policy.allow_private_hostnames:
            self.trusted.update(str(info["host"]) for info in infos)
            return infos
        allowed = [info for info in infos if self._policy.address_allowed(info["host"])]
        if not allowed:
            raise _private_refusal()
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def guarded_socket_factory(policy: MediaPolicy, resolver: GuardedResolver):
    """The last check before any connect: the socket's own destination address."""

    def make_socket(addr_info: Any) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        address = str(sockaddr[0])
        if not (policy.address_allowed(address) or address in resolver.trusted):
            raise RefusedAddress(f"refused to connect to {address}")
        return socket.socket(family, type_, proto)

    return make_socket


def make_fetch_session(policy: MediaPolicy, resolver: aiohttp.abc.AbstractResolver | None = None
                       ) -> aiohttp.ClientSession:
    guarded = GuardedResolver(policy, resolver)
    connector = aiohttp.TCPConnector(resolver=guarded, limit=64, use_dns_cache=False,
                                     socket_factory=guarded_socket_factory(policy, guarded))
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=policy.fetch_timeout_s,
                                    sock_read=policy.fetch_timeout_s)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False,
                                 headers={"User-Agent": "vlserve-media-fetch/0.1"})


async def fetch(session: aiohttp.ClientSession, url: str, policy: MediaPolicy, kind: str, max_bytes: int,
                mimes: tuple[str, ...] | None = None) -> bytes:
    """The body at `url`, a `kind`/* (or one of `mimes`' prefixes, or generic) resource of
    at most `max_bytes`."""
    try:
        async with asyncio.timeout(policy.fetch_timeout_s):
            return await _follow(session, url, policy, kind, max_bytes, mimes or (f"{kind}/",))
    except TimeoutError:
        raise ServiceError(ErrorKind.IMAGE_FETCH_FAILED, f"Fetching the URL took longer than "
                           f"{policy.fetch_timeout_s:g} s (MEDIA_FETCH_TIMEOUT_S).") from None
    except aiohttp.ClientError as exc:
        if isinstance(exc.__cause__, ServiceError):
            raise exc.__cause__ from None
        if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, RefusedAddress):
            raise _private_refusal() from None
        raise ServiceError(ErrorKind.IMAGE_FETCH_FAILED, f"Could not fetch the URL ({type(exc).__name__}).") from None
    except (ValueError, UnicodeError):  # yarl or aiohttp refusing the URL's own spelling
        raise ServiceError(ErrorKind.IMAGE_FETCH_FAILED, "The URL (or a redirect's Location) is malformed.") from None


async def _follow(session: aiohttp.ClientSession, url: str, policy: MediaPolicy, kind: str, max_bytes: int,
                  mimes: tuple[str, ...]) -> bytes:
    target = parse_url(url)
    for _hop in range(policy.max_redirects + 1):
        check_url(target, policy)
        async with session.get(target, allow_redirects=False) as resp:
            if resp.status in _REDIRECTS and "Location" in resp.headers:
                target = resp.url.join(parse_url(resp.headers["Location"]))
                continue
            if resp.status != 200:
                raise ServiceError(ErrorKind.IMAGE_FETCH_FAILED, f"The URL answered HTTP {resp.status}.")
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if not ctype.startswith(mimes) and ctype not in _GENERIC_TYPES:
                raise ServiceError(ErrorKind.UNSUPPORTED_MEDIA, f"The URL returned {ctype!r}, not {kind} data.")
            return await _read_capped(resp, max_bytes)
    raise ServiceError(ErrorKind.IMAGE_FETCH_REFUSED,
                       f"The URL redirected more than {policy.max_redirects} times (MEDIA_MAX_REDIRECTS).")


def parse_url(text: str) -> URL:
    """The URL as the HTTP client will see it; a malformed one is the client's 400."""
    try:
        url = URL(text)
        _ = url.host, url.port  # a bad host or a port out of range raises here, not mid-connect
    except (ValueError, UnicodeError, TypeError):
        raise ServiceError(ErrorKind.IMAGE_FETCH_FAILED, "The URL (or a redirect's Location) is malformed.") from None
    return url


def check_url(url: URL, policy: MediaPolicy) -> None:
    if url.scheme not in ("http", "https") or not url.host:
        raise ServiceError(ErrorKind.IMAGE_FETCH_REFUSED, "Only http(s) URLs are fetched.")
    if url.raw_user or url.raw_password:
        raise ServiceError(ErrorKind.IMAGE_FETCH_REFUSED, "URLs with a user name or password are not fetched.")
    host = url.host
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
