"""What the media module accepts: limits, the pixel budget, and where it may fetch from."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from vlserve.config import Settings
from vlserve.errors import ErrorKind, ServiceError
from vlserve.media.pdf import PdfLimits

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 ranges that carry an IPv4 address inside them: judged by the address they carry.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")       # RFC 6052: the last 32 bits
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")    # deprecated ::a.b.c.d
# Never fetched from: local-use NAT64 (RFC 8215), Teredo (its addresses can embed any
# IPv4 host behind a relay), and the deprecated site-local range, which Python calls global.
_REFUSED_V6 = tuple(ipaddress.ip_network(n) for n in ("64:ff9b:1::/48", "2001::/32", "fec0::/10"))
# IANA special-purpose ranges that Python 3.11's `is_global` still calls global (e.g.
# 192.0.0.192, a cloud's instance-metadata address; SIIT; documentation; segment routing).
_SPECIAL_PURPOSE = tuple(ipaddress.ip_network(n) for n in (
    "192.0.0.0/24", "198.18.0.0/15", "240.0.0.0/4", "::ffff:0:0:0/96", "100::/64", "2001:db8::/32",
    "3fff::/20", "5f00::/16"))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, NAT64, 6to4), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):  # :: and ::1 are not IPv4
        return ipaddress.IPv4Address(ip.packed[12:])
    return None


def is_public(ip: Address) -> bool:
    """A public unicast address, whatever form it is written in."""
    if any(ip.version == net.version and ip in net for net in _SPECIAL_PURPOSE):
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in _REFUSED_V6):
            return False
        inner = embedded_ipv4(ip)
        if inner is not None:
            return is_public(inner)
    return ip.is_global and not ip.is_multicast

# A per-request `detail: "low"` asks for at most this many visual tokens.
LOW_DETAIL_TOKENS = 256


def _idna(name: str) -> str:
    try:
        return name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return name


@dataclass(frozen=True)
class PixelBudget:
    """Qwen-VL's resize rule: sides multiples of `factor`, area within [min, max] pixels."""

    factor: int
    min_pixels: int
    max_pixels: int


@dataclass(frozen=True)
class ImageHints:
    """What a client may ask for one image: OpenAI's `detail`, Qwen's min/max pixels."""

    detail: str | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None


@dataclass(frozen=True)
class MediaPolicy:
    max_image_bytes: int
    max_video_bytes: int
    max_total_bytes: int
    max_images: int
    max_pixels: int
    allow_remote: bool
    fetch_timeout_s: float
    max_redirects: int
    budget: PixelBudget
    downscale: bool = True
    # The engine is told the budget and shrinks an image to it itself: the local engine,
    # or an upstream sent LMDeploy's form of mm_processor_kwargs. Not the flat form: vLLM
    # refuses it unless started with --trust-request-mm-kwargs, and is then not sent it.
    engine_applies_budget: bool = False
    decode_memory_bytes: int = 512 * 1024 * 1024
    pdf: PdfLimits = field(default_factory=PdfLimits)
    local_dir: Path | None = None
    allow_private_networks: tuple[Network, ...] = ()
    allow_private_hostnames: frozenset[str] = field(default_factory=frozenset)
    allowed_domains: tuple[str, ...] = ()
    denied_domains: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaPolicy:
        networks, hostnames = [], set()
        for entry in settings.media_allow_private_hosts:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hostnames.add(entry.lower())
        return cls(
            max_image_bytes=settings.media_max_image_bytes, max_video_bytes=settings.media_max_video_bytes,
            max_total_bytes=settings.media_max_total_bytes, max_images=settings.media_max_images,
            max_pixels=settings.media_max_pixels, allow_remote=settings.media_allow_remote,
            fetch_timeout_s=settings.media_fetch_timeout_s, max_redirects=settings.media_max_redirects,
            budget=PixelBudget(settings.media_image_factor, settings.media_image_min_pixels,
                               settings.media_image_max_pixels),
            downscale=settings.media_downscale,
            engine_applies_budget=settings.engine_kind == "local" or settings.upstream_mm_kwargs == "lmdeploy",
            local_dir=settings.allowed_local_media_path,
            decode_memory_bytes=settings.media_decode_memory_bytes,
            pdf=PdfLimits(max_bytes=settings.media_max_pdf_bytes, max_pages=settings.media_max_pdf_pages,
                          workers=settings.media_pdf_workers, render_timeout_s=settings.media_pdf_render_timeout_s,
                          worker_memory_bytes=settings.media_pdf_worker_memory_bytes,
                          pages_in_flight=settings.media_pdf_pages_in_flight),
            allow_private_networks=tuple(networks), allow_private_hostnames=frozenset(hostnames),
            allowed_domains=tuple(d.lower().lstrip(".") for d in settings.media_allowed_domains),
            denied_domains=tuple(d.lower().lstrip(".") for d in settings.media_denied_domains),
        )

    # --- network rules ------------------------------------------------------------------
    def address_allowed(self, address: str) -> bool:
        """Public unicast addresses only, unless the operator allowed a private range."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)  # the same host, written the IPv6 way
        if any(c in net for c in candidates for net in self.allow_private_networks):
            return True
        return is_public(ip)

    def check_domain(self, host: str) -> None:
        """Operator's allow/deny lists; a domain matches itself and its subdomains, whether
        either is written in Unicode or in its IDNA (punycode) form."""
        host = host.lower().rstrip(".")
        forms = {host, _idna(host)}

        def matches(domain: str) -> bool:
            return any(h == d or h.endswith("." + d) for h in forms for d in (domain, _idna(domain)))

        if any(matches(d) for d in self.denied_domains):
            raise ServiceError(ErrorKind.IMAGE_FETCH_REFUSED, f"Fetching from {host} is denied by this server's "
                               "domain list (MEDIA_DENIED_DOMAINS).")
        if self.allowed_domains and not any(matches(d) for d in self.allowed_domains):
            raise ServiceError(ErrorKind.IMAGE_FETCH_REFUSED, f"{host} is not on this server's list of domains "
                               "it fetches media from (MEDIA_ALLOWED_DOMAINS).")

    # --- the pixel budget for one image -------------------------------------------------
    def budget_for(self, hints: ImageHints) -> PixelBudget:
        """The operator's budget, narrowed (never widened) by what the client asked for."""
        base = self.budget
        low_floor = base.factor * base.factor
        max_pixels = base.max_pixels
        if hints.detail == "low":
            max_pixels = min(max_pixels, LOW_DETAIL_TOKENS * low_floor)
        if hints.max_pixels is not None:
            max_pixels = max(low_floor, min(max_pixels, hints.max_pixels))
        min_pixels = min(base.min_pixels, max_pixels)
        if hints.min_pixels is not None:
            min_pixels = max(low_floor, min(hints.min_pixels, max_pixels))
        return PixelBudget(base.factor, min_pixels, max_pixels)
