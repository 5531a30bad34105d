"""Every spelling of a private address is refused before anything connects to it.

A canary server on 127.0.0.1 counts every connection. The guard runs with its real
resolver and socket factory; 127.0.0.2 stands in for a "public" host (the operator
allows it), so the same spellings of an allowed address are fetched: the test can see
a fetch when there is one.
"""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.host_spellings import DOTS, all_spellings, dotted, ipv6_forms, numeric_forms
from tests.media_helpers import png, policy
from vlserve.errors import ErrorKind, ServiceError
from vlserve.media import MediaNormalizer, make_fetch_session
from vlserve.media.policy import is_public

PRIVATE = ["127.0.0.1", "10.1.2.3", "169.254.169.254", "192.168.0.1", "172.16.5.4", "100.64.0.1", "0.0.0.0"]


class Canary:
    """Listens on 127.0.0.1 (private: must never be reached) and 127.0.0.2 (allowed)."""

    def __init__(self) -> None:
        self.hits = {"127.0.0.1": 0, "127.0.0.2": 0}

    async def handle(self, request):
        self.hits[request.transport.get_extra_info("sockname")[0]] += 1
        return web.Response(body=png(), content_type="image/png")


async def fetch_with_canary(hosts: list[str]) -> tuple[list[ServiceError | None], int, int]:
    canary = Canary()
    app = web.Application()
    app.router.add_get("/{tail:.*}", canary.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    outcomes: list[ServiceError | None] = []
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        await web.TCPSite(runner, "127.0.0.2", port).start()
        the_policy = policy(MEDIA_ALLOW_PRIVATE_HOSTS="127.0.0.2", MEDIA_FETCH_TIMEOUT_S=2)
        async with make_fetch_session(the_policy) as session:
            media = MediaNormalizer(the_policy, session)
            for host in hosts:
                try:
                    await media.image(f"http://{host}:{port}/x.png")
                    outcomes.append(None)
                except ServiceError as exc:
                    outcomes.append(exc)
    finally:
        await runner.cleanup()
    return outcomes, canary.hits["127.0.0.1"], canary.hits["127.0.0.2"]


def assert_refused(hosts: list[str]) -> None:
    outcomes, hits, _ = asyncio.run(fetch_with_canary(hosts))
    assert hits == 0, f"the canary was reached through one of {hosts}"
    for host, outcome in zip(hosts, outcomes, strict=True):
        assert outcome is not None and outcome.status == 400, host
        assert outcome.kind in (ErrorKind.IMAGE_FETCH_REFUSED, ErrorKind.IMAGE_FETCH_FAILED), (host, outcome.message)


@pytest.mark.parametrize("ip", PRIVATE)
def test_every_listed_spelling_of_a_private_address_is_refused(ip):
    assert_refused(all_spellings(ip))


def test_the_same_spellings_of_an_allowed_address_are_fetched():
    """The control: 127.0.0.2 is allowed, and its Unicode and fullwidth spellings reach it."""
    hosts = [dotted("127.0.0.2", [dot] * 3, [False] * 4) for dot in DOTS] + [dotted("127.0.0.2", ["."] * 3, [True] * 4)]
    outcomes, private_hits, allowed_hits = asyncio.run(fetch_with_canary(hosts))
    assert outcomes == [None] * len(hosts) and (private_hits, allowed_hits) == (0, len(hosts))


spelling = st.builds(
    lambda ip, dots, wide, form, pick: (
        dotted(ip, dots, wide) if form == "dotted" else
        numeric_forms(ip)[pick % 5] if form == "numeric" else ipv6_forms(ip)[pick % 7]),
    st.sampled_from(PRIVATE[:5]), st.lists(st.sampled_from(DOTS), min_size=3, max_size=3),
    st.lists(st.booleans(), min_size=4, max_size=4), st.sampled_from(["dotted", "numeric", "ipv6"]),
    st.integers(0, 100))


@given(hosts=st.lists(spelling, min_size=1, max_size=8))
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_generated_spellings_never_reach_the_canary(hosts):
    assert_refused(hosts)


@pytest.mark.parametrize("address, public", [
    ("::7f00:1", False), ("::127.0.0.1", False), ("64:ff9b::a9fe:a9fe", False), ("64:ff9b::7f00:1", False),
    ("64:ff9b:1::a9fe:a9fe", False), ("2002:7f00:1::1", False), ("2002:a9fe:a9fe::", False),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False), ("fec0::1", False), ("::ffff:10.0.0.1", False),
    ("::1", False), ("::", False),
    ("64:ff9b::808:808", True), ("2002:808:808::1", True), ("2606:4700:4700::1111", True), ("8.8.8.8", True),
])
def test_ipv6_forms_are_judged_by_the_ipv4_they_carry(address, public):
    assert is_public(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize("address", ["192.0.0.192", "198.18.0.1", "::ffff:0:7f00:1", "2001:db8::1", "3fff::1"])
def test_special_purpose_ranges_pythons_is_global_misses_are_refused(address):
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("entry, url_host", [("xn--bcher-kva.example", "bücher.example"),
                                             ("bücher.example", "xn--bcher-kva.example"),
                                             ("bücher.example", "BÜCHER.example")])
def test_domain_lists_match_unicode_and_punycode_spellings(entry, url_host):
    from vlserve.media.fetch import check_url, parse_url

    with pytest.raises(ServiceError) as info:
        check_url(parse_url(f"http://{url_host}/x.png"), policy(MEDIA_DENIED_DOMAINS=entry))
    assert info.value.kind is ErrorKind.IMAGE_FETCH_REFUSED and "denied" in info.value.message


@pytest.mark.parametrize("address", ["127.0.0.1", "169.254.169.254", "::1", "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe"])
async def test_the_socket_factory_refuses_a_private_address_whatever_checked_it_before(address):
    """The last line: even a connect the URL check and the resolver let through (a literal
    some parser normalised, a rebinding race) never gets a socket to a private address."""
    import socket

    from vlserve.media.fetch import GuardedResolver, RefusedAddress, guarded_socket_factory

    the_policy = policy(MEDIA_ALLOW_PRIVATE_HOSTS="127.0.0.2")
    make_socket = guarded_socket_factory(the_policy, GuardedResolver(the_policy))
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with pytest.raises(RefusedAddress):
        make_socket((family, socket.SOCK_STREAM, 6, "", (address, 80)))
    allowed = make_socket((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", 80)))
    allowed.close()
