"""Media normalisation: every image form → validated data URL, every bad input → our 4xx."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import zlib

import pytest
from aiohttp import web
from hypothesis import given, settings, strategies as st
from PIL import Image

from vlserve.config import Settings
from vlserve.errors import ErrorKind, ServiceError
from vlserve.media import MediaNormalizer, MediaPolicy, decode_base64, make_fetch_session, parse_data_url


def policy(**overrides) -> MediaPolicy:
    return MediaPolicy.from_settings(Settings(**overrides))


def png(size=(32, 24), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


def jpeg(size=(32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 10)).save(buf, "JPEG")
    return buf.getvalue()


def png_bomb(width=100_000, height=100_000) -> bytes:
    """A tiny PNG whose header claims a huge image."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def normalize(ref: str, **overrides):
    return asyncio.run(MediaNormalizer(policy(**overrides)).normalize(ref))


def kind_of(ref: str, **overrides) -> ErrorKind:
    with pytest.raises(ServiceError) as info:
        normalize(ref, **overrides)
    return info.value.kind


@pytest.mark.parametrize("data, mime", [(png(), "image/png"), (jpeg(), "image/jpeg")])
def test_data_url_and_raw_base64_become_the_same_data_url(data, mime):
    encoded = base64.b64encode(data).decode()
    from_url = normalize(f"data:image/whatever;base64,{encoded}")
    from_raw = normalize(encoded)
    spaced = normalize("\n".join(encoded[i:i + 60] for i in range(0, len(encoded), 60)).rstrip("="))
    assert from_url == from_raw == spaced
    assert from_url.data_url == f"data:{mime};base64,{encoded}"  # bytes forwarded untouched
    assert (from_url.width, from_url.height) == (32, 24)


@pytest.mark.parametrize("ref, kind", [
    ("data:image/png;base64,@@@@", ErrorKind.INVALID_IMAGE),
    ("data:image/png,rawbytes", ErrorKind.INVALID_IMAGE),
    ("data:text/plain;base64,aGVsbG8=", ErrorKind.UNSUPPORTED_MEDIA),
    ("data:;base64," + base64.b64encode(b"GIF89a-broken").decode(), ErrorKind.UNSUPPORTED_MEDIA),
    (base64.b64encode(b"just some text that is long enough").decode(), ErrorKind.UNSUPPORTED_MEDIA),
    (base64.b64encode(png()[:-30]).decode(), ErrorKind.INVALID_IMAGE),
    (base64.b64encode(jpeg()[:200]).decode(), ErrorKind.INVALID_IMAGE),
    ("", ErrorKind.INVALID_IMAGE),
    ("file:///etc/passwd", ErrorKind.IMAGE_FETCH_REFUSED),
    ("/etc/passwd", ErrorKind.IMAGE_FETCH_REFUSED),
    ("../secret.png", ErrorKind.IMAGE_FETCH_REFUSED),
    ("/var/lib/photo.jpg", ErrorKind.IMAGE_FETCH_REFUSED),
    ("~/photo.jpg", ErrorKind.IMAGE_FETCH_REFUSED),
    ("ftp://example.com/a.png", ErrorKind.IMAGE_FETCH_REFUSED),
    ("gopher://example.com/", ErrorKind.IMAGE_FETCH_REFUSED),
])
def test_bad_inputs_are_refused_with_our_error(ref, kind):
    assert kind_of(ref) is kind


def test_decompression_bomb_is_413_not_a_crash():
    assert kind_of(base64.b64encode(png_bomb()).decode()) is ErrorKind.TOO_LARGE


def test_pixel_limit_names_the_limit():
    with pytest.raises(ServiceError) as info:
        normalize(base64.b64encode(png((200, 200))).decode(), MEDIA_MAX_PIXELS=10_000)
    assert info.value.status == 413 and "10,000" in info.value.message


def test_byte_limit_is_checked_before_decoding():
    big = base64.b64encode(b"\0" * 5000).decode()
    with pytest.raises(ServiceError) as info:
        normalize(big, MEDIA_MAX_IMAGE_BYTES=4096)
    assert info.value.status == 413 and "4,096" in info.value.message


def test_image_count_limit():
    normalizer = MediaNormalizer(policy(MEDIA_MAX_IMAGES=2))
    refs = [base64.b64encode(png()).decode()] * 3
    with pytest.raises(ServiceError) as info:
        asyncio.run(normalizer.normalize_many(refs))
    assert info.value.status == 400 and "limit is 2" in info.value.message


@pytest.mark.parametrize("address, allowed", [
    ("8.8.8.8", True), ("2001:4860:4860::8888", True),
    ("127.0.0.1", False), ("::1", False), ("10.1.2.3", False), ("192.168.0.1", False),
    ("172.16.5.5", False), ("169.254.169.254", False), ("0.0.0.0", False), ("224.0.0.1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False), ("fe80::1", False), ("fc00::1", False),
])
def test_only_public_unicast_addresses_by_default(address, allowed):
    assert policy().address_allowed(address) is allowed


def test_operator_can_allow_a_private_range():
    allowing = policy(MEDIA_ALLOW_PRIVATE_HOSTS="127.0.0.0/8")
    assert allowing.address_allowed("127.0.0.1") and not allowing.address_allowed("10.0.0.1")


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_base64_parser_raises_only_our_error(text):
    try:
        decode_base64(text, policy())
    except ServiceError as exc:
        assert exc.status in (400, 413)


@given(st.from_regex(r"data:[a-z/+.-]{0,20}(;[a-z=0-9]{0,10}){0,2},[A-Za-z0-9+/= \n-]{0,80}", fullmatch=True)
       | st.text(max_size=100).map(lambda t: "data:" + t))
@settings(max_examples=300, deadline=None)
def test_data_url_parser_raises_only_our_error(url):
    try:
        parse_data_url(url, policy())
    except ServiceError as exc:
        assert 400 <= exc.status < 500


# --- remote fetch, against a real HTTP server on 127.0.0.1 ---------------------------

@pytest.fixture
async def image_site():
    async def image(_):
        return web.Response(body=png(), content_type="image/png")

    async def redirect_to_image(request):
        raise web.HTTPFound(f"http://127.0.0.1:{request.url.port}/image.png")

    async def text(_):
        return web.Response(text="hello", content_type="text/html")

    async def endless(request):
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        for _ in range(10_000):
            await response.write(b"\0" * 65536)
        return response

    async def slow(request):
        await asyncio.sleep(5)
        return web.Response(body=png(), content_type="image/png")

    app = web.Application()
    app.add_routes([web.get("/image.png", image), web.get("/redirect", redirect_to_image),
                    web.get("/page", text), web.get("/endless", endless), web.get("/slow", slow)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def fetch(url: str, **overrides):
    the_policy = policy(**overrides)
    async with make_fetch_session(the_policy) as session:
        return await MediaNormalizer(the_policy, session).normalize(url)


async def fetch_error(url: str, **overrides) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        await fetch(url, **overrides)
    return info.value


async def test_fetch_from_an_allowed_host(image_site):
    image = await fetch(f"{image_site}/image.png", MEDIA_ALLOW_PRIVATE_HOSTS="127.0.0.1")
    assert image.mime == "image/png" and image.width == 32


async def test_loopback_is_refused_by_default(image_site):
    error = await fetch_error(f"{image_site}/image.png")
    assert error.kind is ErrorKind.IMAGE_FETCH_REFUSED and "private" in error.message


async def test_a_name_resolving_to_loopback_is_refused(image_site):
    error = await fetch_error(image_site.replace("127.0.0.1", "localhost") + "/image.png")
    assert error.kind is ErrorKind.IMAGE_FETCH_REFUSED


async def test_redirects_are_followed_and_checked(image_site):
    ok = await fetch(f"{image_site}/redirect", MEDIA_ALLOW_PRIVATE_HOSTS="127.0.0.1")
    assert ok.width == 32
    error = await fetch_error(f"{image_site}/redirect", MEDIA_ALLOW_PRIVATE_HOSTS="127.0.0.1",
                              MEDIA_MAX_REDIRECTS=0)
    assert error.kind is ErrorKind.IMAGE_FETCH_REFUSED and "redirect" in error.message


async def test_non_image_content_type_is_415(image_site):
    error = await fetch_error(f"{image_site}/page", MEDIA_ALLOW_PRIVATE_HOSTS="127.0.0.1")
    assert error.status == 415


async def test_endless_body_stops_at_the_cap(image_site):
    error = await fetch_error(f"{image_site}/endless", MEDIA_ALLOW_PRIVATE_HOSTS="127.0.0.1",
                              MEDIA_MAX_IMAGE_BYTES=100_000)
    assert error.status == 413


async def test_slow_server_times_out(image_site):
    error = await fetch_error(f"{image_site}/slow", MEDIA_ALLOW_PRIVATE_HOSTS="127.0.0.1", MEDIA_FETCH_TIMEOUT_S=0.5)
    assert error.kind is ErrorKind.IMAGE_FETCH_FAILED and "0.5" in error.message


async def test_remote_fetching_can_be_switched_off():
    the_policy = policy(MEDIA_ALLOW_REMOTE=False)
    with pytest.raises(ServiceError) as info:
        await MediaNormalizer(the_policy, None).normalize("https://example.com/a.png")
    assert info.value.kind is ErrorKind.IMAGE_FETCH_REFUSED
