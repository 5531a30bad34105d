"""Ways to write one IPv4 address in a URL's host that some parser normalises to it.

Used by the property test of the fetch guard and by the canary test through a real
gateway: every spelling of a private address must be refused, whatever form it takes.
"""

from __future__ import annotations

import ipaddress

DOTS = (".", "\u3002", "\uff61", "\uff0e")  # ASCII, ideographic, halfwidth ideographic, fullwidth
FULLWIDTH = str.maketrans("0123456789abcdefABCDEF", "０１２３４５６７８９ａｂｃｄｅｆＡＢＣＤＥＦ")


def dotted(ip: str, dots: list[str], fullwidth: list[bool]) -> str:
    parts = [p.translate(FULLWIDTH) if wide else p for p, wide in zip(ip.split("."), fullwidth, strict=False)]
    return "".join(part + (dots[i] if i < 3 else "") for i, part in enumerate(parts))


def numeric_forms(ip: str) -> list[str]:
    value = int(ipaddress.IPv4Address(ip))
    a, b, c, d = ip.split(".")
    return [str(value), hex(value), f"0{int(a):o}.{b}.{c}.{d}", f"{a}.{(int(b) << 16) + (int(c) << 8) + int(d)}",
            f"0x{int(a):x}.{b}.{c}.{d}"]


def ipv6_forms(ip: str) -> list[str]:
    v4 = ipaddress.IPv4Address(ip)
    high, low = int(v4) >> 16, int(v4) & 0xFFFF
    sixtofour = ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80) | 1)
    return [f"[::ffff:{ip}]", f"[::FFFF:{high:x}:{low:x}]", f"[::{ip}]", f"[64:ff9b::{ip}]",
            f"[64:ff9b::{high:x}:{low:x}]", f"[{sixtofour}]", f"[0:0:0:0:0:ffff:{ip}]"]


def all_spellings(ip: str) -> list[str]:
    """A fixed, broad list (the hypothesis strategy draws more combinations)."""
    spellings = [dotted(ip, [dot] * 3, [False] * 4) for dot in DOTS]
    spellings += [dotted(ip, ["."] * 3, [True] * 4), dotted(ip, ["\u3002", ".", "\uff0e"], [True, False, True, False])]
    return spellings + numeric_forms(ip) + ipv6_forms(ip)
