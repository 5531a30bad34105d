"""Image inputs → validated `data:image/...;base64,` URLs.

Every image a client sends (data URL, raw base64, http(s) URL, uploaded file) passes
through `MediaNormalizer` before any engine sees it: engines only ever receive data URLs
of bytes that Pillow has decoded. LMDeploy opens local paths and `file://` URLs it is
given; nothing of that kind can reach it through here.

This module knows nothing of engines or HTTP frameworks; its failures are ServiceErrors.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import re
import warnings
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from PIL import Image, UnidentifiedImageError
from yarl import URL

from .config import Settings
from .errors import ErrorKind, ServiceError

# Formats a vision model can use, by Pillow's format name → the MIME type we forward.
ACCEPTED_FORMATS = {
    "JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
    "BMP": "image/bmp", "TIFF": "image/tiff", "MPO": "image/jpeg",
}
_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*?),(?P<data>.*)$", re.S)
_BASE64_JUNK = re.compile(r"\s+")


@dataclass(frozen=True)
class MediaPolicy:
    max_image_bytes: int
    max_images: int
    max_pixels: int
    allow_remote: bool
    fetch_timeout_s: float
    max_redirects: int
    allow_private_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    allow_private_hostnames: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaPolicy:
        networks, hostnames = [], set()
        for entry in settings.media_allow_private_hosts:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hostnames.add(entry.lower())
        return cls(
            max_image_bytes=settings.media_max_image_bytes, max_images=settings.media_max_images,
            max_pixels=settings.media_max_pixels, allow_remote=settings.media_allow_remote,
            fetch_timeout_s=settings.media_fetch_timeout_s, max_redirects=settings.media_max_redirects,
            allow_private_networks=tuple(networks), allow_private_hostnames=frozenset(hostnames),
        )

    def address_allowed(self, address: str) -> bool:
        """Public unicast addresses only, unless the operator allowed a private range."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allow_private_networks):
            return True
        return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class NormalizedImage:
    data_url: str
    mime: str
    width: int
    height: int
    nbytes: int


def _too_large(what: str, limit: int) -> ServiceError:
    return ServiceError(ErrorKind.TOO_LARGE, f"{what} is larger than the limit of {limit:,} bytes.")


def inspect_image(data: bytes, policy: MediaPolicy) -> NormalizedImage:
    """Decode `data` fully with Pillow (CPU-bound: call it off the event loop)."""
    if len(data) > policy.max_image_bytes:
        raise _too_large("The image", policy.max_image_bytes)
    if not data:
        raise ServiceError(ErrorKind.INVALID_IMAGE, "The image is empty.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt, (width, height) = img.format, img.size
                if fmt not in ACCEPTED_FORMATS:
                    raise ServiceError(ErrorKind.UNSUPPORTED_MEDIA,
                                       f"Image format {fmt} is not accepted; send JPEG, PNG, WebP, GIF, BMP or TIFF.")
                if width * height > policy.max_pixels:
                    raise ServiceError(ErrorKind.TOO_LARGE, f"The image is {width}x{height} pixels; "
                                       f"the limit is {policy.max_pixels:,} pixels.")
                img.load()  # full decode: catches truncated and corrupt files now, not in the engine
    except ServiceError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ServiceError(ErrorKind.TOO_LARGE, "The image has too many pixels to decode safely.") from None
    except UnidentifiedImageError:
        raise ServiceError(ErrorKind.UNSUPPORTED_MEDIA, "The data is not an image in a format we can read.") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... on corrupt data
        raise ServiceError(ErrorKind.INVALID_IMAGE, f"The image could not be decoded ({type(exc).__name__}).") from None
    mime = ACCEPTED_FORMATS[fmt]
    url = f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
    return NormalizedImage(url, mime, width, height, len(data))


def decode_base64(text: str, policy: MediaPolicy) -> bytes:
    """Lenient base64 (whitespace, missing padding, URL-safe alphabet); strict about the rest."""
    cleaned = _BASE64_JUNK.sub("", text)
    if len(cleaned) * 3 // 4 > policy.max_image_bytes:
        raise _too_large("The image", policy.max_image_bytes)
    cleaned = cleaned.replace("-", "+").replace("_", "/").rstrip("=")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError(ErrorKind.INVALID_IMAGE, "The image is not valid base64.") from None


def parse_data_url(url: str, policy: MediaPolicy) -> bytes:
    match = _DATA_URL.match(url)
    if not match:
        raise ServiceError(ErrorKind.INVALID_IMAGE, "Malformed data URL: expected data:image/<type>;base64,<data>.")
    mime = match["mime"].strip().lower()
    if mime and not mime.startswith("image/") and mime != "application/octet-stream":
        raise ServiceError(ErrorKind.UNSUPPORTED_MEDIA, f"A data URL of type {mime!r} is not an image.")
    if ";base64" not in match["params"].lower():
        raise ServiceError(ErrorKind.INVALID_IMAGE, "Only base64 data URLs are accepted for images.")
    return decode_base64(match["data"], policy)


# Leading bytes of the formats in ACCEPTED_FORMATS.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def _looks_like_image(data: bytes) -> bool:
    return data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _local_path_refused() -> ServiceError:
    return ServiceError(ErrorKind.IMAGE_FETCH_REFUSED, "Local file paths are not accepted; "
                        "send the image as a data URL, base64 or an upload.")


def _decode_if_image(ref: str, policy: MediaPolicy) -> bytes:
    try:
        data = decode_base64(ref, policy)
    except ServiceError as exc:
        if exc.kind is ErrorKind.TOO_LARGE:
            raise
        raise _local_path_refused() from None
    if not _looks_like_image(data):
        raise _local_path_refused()
    return data


class MediaNormalizer:
    """Turns image references into NormalizedImages under a MediaPolicy.

    `session` is the aiohttp session used for remote fetches; its connector must use
    `GuardedResolver` (see `make_fetch_session`) so that every address actually
    connected to is checked, not only the one we looked up first.
    """

    def __init__(self, policy: MediaPolicy, session: aiohttp.ClientSession | None = None) -> None:
        self.policy = policy
        self._session = session

    async def from_bytes(self, data: bytes) -> NormalizedImage:
        return await asyncio.to_thread(inspect_image, data, self.policy)

    async def normalize(self, ref: str) -> NormalizedImage:
        ref = ref.strip()
        lowered = ref[:16].lower()
        if lowered.startswith("data:"):
            data = await asyncio.to_thread(parse_data_url, ref, self.policy)
        elif lowered.startswith(("http://", "https://")):
            data = await self._fetch(ref)
        elif lowered.startswith("file:"):
            raise _local_path_refused()
        elif ref.startswith(("/", ".", "~")):
            # Base64 of a JPEG starts with "/9j/": tell it apart from a path by what it decodes to.
            data = await asyncio.to_thread(_decode_if_image, ref, self.policy)
        elif re.match(r"^[a-z][a-z0-9+.-]*://", lowered):
            raise ServiceError(ErrorKind.IMAGE_FETCH_REFUSED, "Only http(s) image URLs are accepted.")
        else:
            data = await asyncio.to_thread(decode_base64, ref, self.policy)
        return await self.from_bytes(data)

    async def normalize_many(self, refs: list[str]) -> list[NormalizedImage]:
        if len(refs) > self.policy.max_images:
            raise ServiceError(ErrorKind.BAD_REQUEST, f"The request has {len(refs)} images; "
                               f"the limit is {self.policy.max_images} per request.")
        return list(await asyncio.gather(*(self.normalize(ref) for ref in refs)))

    async def _fetch(self, url: str) -> bytes:
        if not self.policy.allow_remote or self._session is None:
            raise ServiceError(ErrorKind.IMAGE_FETCH_REFUSED, "This server does not fetch image URLs; "
                               "send the image as a data URL or base64.")
        try:
            async with asyncio.timeout(self.policy.fetch_timeout_s):
                return await self._fetch_following_redirects(url)
        except TimeoutError:
            raise ServiceError(ErrorKind.IMAGE_FETCH_FAILED, f"Fetching the image URL took longer than "
                               f"{self.policy.fetch_timeout_s:g} s.") from None
        except aiohttp.ClientError as exc:
            cause = exc.__cause__ or exc
            if isinstance(cause, ServiceError):
                raise cause from None
            raise ServiceError(ErrorKind.IMAGE_FETCH_FAILED,
                               f"Could not fetch the image URL ({type(exc).__name__}).") from None

    async def _fetch_following_redirects(self, url: str) -> bytes:
        for _hop in range(self.policy.max_redirects + 1):
            self._check_url(url)
            async with self._session.get(url, allow_redirects=False) as resp:
                if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                    url = str(resp.url.join(URL(resp.headers["Location"])))
                    continue
                if resp.status != 200:
                    raise ServiceError(ErrorKind.IMAGE_FETCH_FAILED, f"The image URL answered HTTP {resp.status}.")
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if ctype and not ctype.startswith("image/") and ctype not in ("application/octet-stream", "binary/octet-stream"):
                    raise ServiceError(ErrorKind.UNSUPPORTED_MEDIA, f"The image URL returned {ctype!r}, not an image.")
                return await self._read_capped(resp)
        raise ServiceError(ErrorKind.IMAGE_FETCH_REFUSED,
                           f"The image URL redirected more than {self.policy.max_redirects} times.")

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServiceError(ErrorKind.IMAGE_FETCH_REFUSED, "Only http(s) image URLs are accepted.")
        host = parts.hostname
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return  # a name: GuardedResolver checks every address it resolves to
        if not self.policy.address_allowed(host):
            raise ServiceError(ErrorKind.IMAGE_FETCH_REFUSED, "The image URL points to a private or "
                               "reserved network address, which this server does not fetch from.")

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        limit = self.policy.max_image_bytes
        if resp.content_length is not None and resp.content_length > limit:
            raise _too_large("The image at that URL", limit)
        chunks, total = [], 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            total += len(chunk)
            if total > limit:  # enforced while streaming: an endless body stops here
                raise _too_large("The image at that URL", limit)
            chunks.append(chunk)
        return b"".join(chunks)


class GuardedResolver(aiohttp.abc.AbstractResolver):
    """A resolver that drops addresses the policy refuses, so they are never connected to."""

    def __init__(self, policy: MediaPolicy) -> None:
        self._policy = policy
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list:
        infos = await self._inner.resolve(host, port, family)
        if host.lower() in self._policy.allow_private_hostnames:
            return infos
        allowed = [info for info in infos if self._policy.address_allowed(info["host"])]
        if not allowed:
            raise ServiceError(ErrorKind.IMAGE_FETCH_REFUSED, "The image URL's host resolves to a private "
                               "or reserved network address, which this server does not fetch from.")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def make_fetch_session(policy: MediaPolicy) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(policy), limit=64, ttl_dns_cache=None,
                                     use_dns_cache=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=policy.fetch_timeout_s,
                                    sock_read=policy.fetch_timeout_s)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False,
                                 headers={"User-Agent": "vlserve-image-fetch/0.1"})
