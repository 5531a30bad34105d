"""Remote fetch policy, against a real HTTP server on 127.0.0.1.

Names that should look public are mapped to 127.0.0.1 by a resolver override, the way a
hostile DNS answer would map them; the guard must judge the address, not the name.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import abc, web

from tests.local_site import serve_app
from tests.media_helpers import png, policy
from vlserve.errors import ErrorKind, ServiceError
from vlserve.media import MediaNormalizer, make_fetch_session

ALLOW_LOOPBACK = {"MEDIA_ALLOW_PRIVATE_HOSTS": "127.0.0.1"}


class PinnedResolver(abc.AbstractResolver):
    """Resolves every name to 127.0.0.1 (or ::1 for names starting with 'v6')."""

    async def resolve(self, host, port=0, family=socket.AF_INET):
        address, fam = ("::1", socket.AF_INET6) if host.startswith("v6") else ("127.0.0.1", socket.AF_INET)
        return [{"hostname": host, "host": address, "port": port, "family": fam, "proto": 0, "flags": 0}]

    async def close(self):
        pass


@pytest.fixture
async def site():
    async def image(_):
        return web.Response(body=png(), content_type="image/png")

    async def redirect(request):
        raise web.HTTPFound(request.query["to"])

    async def raw_redirect(request):  # a Location header exactly as a broken server writes it
        return web.Response(status=302, headers={"Location": request.query["to"]})

    async def html(_):
        return web.Response(text="<html>hello</html>", content_type="text/html")

    async def endless(request):
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        for _ in range(10_000):
            await response.write(b"\0" * 65536)
        return response

    async def drip(request):  # slow loris: a byte now and then, never finishing in time
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"\x89")
            await asyncio.sleep(0.1)
        return response

    app = web.Application()
    app.add_routes([web.get("/image.png", image), web.get("/redirect", redirect), web.get("/raw-redirect", raw_redirect), web.get("/page", html),
                    web.get("/endless", endless), web.get("/drip", drip)])
    async with serve_app(app) as (_, url):
        yield int(url.rsplit(":", 1)[1])


async def fetch(url: str, resolver=None, **overrides):
    the_policy = policy(**overrides)
    async with make_fetch_session(the_policy, resolver) as session:
        return await MediaNormalizer(the_policy, session).image(url)


async def refusal(url: str, resolver=None, **overrides) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        await fetch(url, resolver, **overrides)
    return info.value


async def test_fetch_from_an_allowed_host(site):
    image = await fetch(f"http://127.0.0.1:{site}/image.png", **ALLOW_LOOPBACK)
    assert image.mime == "image/png" and image.width == 32


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "10.0.0.1", "169.254.169.254",
                                  "[fe80::1]", "0.0.0.0", "192.168.1.1", "224.0.0.1"])
async def test_private_literal_addresses_are_refused_before_connecting(site, host):
    error = await refusal(f"http://{host}:{site}/image.png")
    assert error.kind is ErrorKind.IMAGE_FETCH_REFUSED and "private" in error.message


async def test_a_public_looking_name_that_resolves_to_loopback_is_refused(site):
    error = await refusal(f"http://cdn.example.com:{site}/image.png", PinnedResolver())
    assert error.kind is ErrorKind.IMAGE_FETCH_REFUSED
    error = await refusal(f"http://v6.example.com:{site}/image.png", PinnedResolver())
    assert error.kind is ErrorKind.IMAGE_FETCH_REFUSED


async def test_the_real_resolver_is_guarded_too(site):
    assert (await refusal(f"http://localhost:{site}/image.png")).kind is ErrorKind.IMAGE_FETCH_REFUSED


async def test_a_redirect_from_an_allowed_host_to_a_private_one_is_refused(site):
    allowed = {"MEDIA_ALLOW_PRIVATE_HOSTS": "images.example.com"}
    ok = await fetch(f"http://images.example.com:{site}/image.png", PinnedResolver(), **allowed)
    assert ok.width == 32
    hop = f"http://images.example.com:{site}/redirect?to=http://127.0.0.1:{site}/image.png"
    assert (await refusal(hop, PinnedResolver(), **allowed)).kind is ErrorKind.IMAGE_FETCH_REFUSED
    hop = f"http://images.example.com:{site}/redirect?to=http://internal.example.com:{site}/image.png"
    assert (await refusal(hop, PinnedResolver(), **allowed)).kind is ErrorKind.IMAGE_FETCH_REFUSED


async def test_redirects_are_followed_up_to_the_limit(site):
    hop = f"http://127.0.0.1:{site}/redirect?to=/image.png"
    assert (await fetch(hop, **ALLOW_LOOPBACK)).width == 32
    error = await refusal(hop, MEDIA_MAX_REDIRECTS=0, **ALLOW_LOOPBACK)
    assert error.kind is ErrorKind.IMAGE_FETCH_REFUSED and "MEDIA_MAX_REDIRECTS" in error.message


@pytest.mark.parametrize("location", ["http://[::1", "http://example.com:99999/x.png", "http://a\\b@c/x.png",
                                      "http://exa mple.com/", "http://[fe80::1%25eth0/", "//:0/x"])
async def test_a_malformed_redirect_is_the_urls_failure_not_a_500(site, location):
    from urllib.parse import quote
    hop = f"http://127.0.0.1:{site}/raw-redirect?to={quote(location)}"
    error = await refusal(hop, **ALLOW_LOOPBACK)
    assert error.status == 400 and error.kind in (ErrorKind.IMAGE_FETCH_FAILED, ErrorKind.IMAGE_FETCH_REFUSED)


async def test_a_redirect_to_another_scheme_is_refused(site):
    hop = f"http://127.0.0.1:{site}/redirect?to=file:///etc/passwd"
    assert (await refusal(hop, **ALLOW_LOOPBACK)).kind is ErrorKind.IMAGE_FETCH_REFUSED


@pytest.mark.parametrize("lists, allowed", [
    ({"MEDIA_DENIED_DOMAINS": "example.com"}, False),
    ({"MEDIA_DENIED_DOMAINS": "other.org"}, True),
    ({"MEDIA_ALLOWED_DOMAINS": "example.com"}, True),
    ({"MEDIA_ALLOWED_DOMAINS": "other.org"}, False),
    ({"MEDIA_ALLOWED_DOMAINS": "ample.com"}, False),
])
async def test_domain_lists(site, lists, allowed):
    url = f"http://img.example.com:{site}/image.png"
    kwargs = {"MEDIA_ALLOW_PRIVATE_HOSTS": "img.example.com", **lists}
    if allowed:
        assert (await fetch(url, PinnedResolver(), **kwargs)).width == 32
    else:
        error = await refusal(url, PinnedResolver(), **kwargs)
        assert error.kind is ErrorKind.IMAGE_FETCH_REFUSED and "DOMAINS" in error.message


async def test_non_image_content_type_is_415(site):
    assert (await refusal(f"http://127.0.0.1:{site}/page", **ALLOW_LOOPBACK)).status == 415


async def test_endless_body_stops_at_the_cap(site):
    error = await refusal(f"http://127.0.0.1:{site}/endless", MEDIA_MAX_IMAGE_BYTES=100_000, **ALLOW_LOOPBACK)
    assert error.status == 413


async def test_slow_loris_times_out(site):
    error = await refusal(f"http://127.0.0.1:{site}/drip", MEDIA_FETCH_TIMEOUT_S=0.5, **ALLOW_LOOPBACK)
    assert error.kind is ErrorKind.IMAGE_FETCH_FAILED and "MEDIA_FETCH_TIMEOUT_S" in error.message
