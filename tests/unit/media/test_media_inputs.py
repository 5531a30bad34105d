"""Every image form → the same validated data URL; every bad input → our 4xx."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.media_helpers import jpeg, normalize, png, png_bomb, policy
from vlserve.errors import ErrorKind, ServiceError
from vlserve.media import MediaNormalizer, decode_base64, parse_data_url


def kind_of(ref: str, **overrides) -> ErrorKind:
    with pytest.raises(ServiceError) as info:
        normalize(ref, **overrides)
    return info.value.kind


@pytest.mark.parametrize("data, mime", [(png(), "image/png"), (jpeg(), "image/jpeg")])
def test_data_url_and_raw_base64_give_the_same_data_url(data, mime):
    encoded = base64.b64encode(data).decode()
    from_url = normalize(f"data:image/whatever;base64,{encoded}")
    from_raw = normalize(encoded)
    wrapped = normalize("\n".join(encoded[i:i + 60] for i in range(0, len(encoded), 60)).rstrip("="))
    urlsafe = normalize(base64.urlsafe_b64encode(data).decode())
    assert from_url == from_raw == wrapped == urlsafe
    assert from_url.data_url == f"data:{mime};base64,{encoded}"  # small images travel untouched
    assert (from_url.width, from_url.height) == (32, 24) and not from_url.reencoded


@pytest.mark.parametrize("ref, kind", [
    ("data:image/png;base64,@@@@", ErrorKind.INVALID_IMAGE),
    ("data:image/png,rawbytes", ErrorKind.INVALID_IMAGE),
    ("data:text/plain;base64,aGVsbG8=", ErrorKind.UNSUPPORTED_MEDIA),
    ("data:;base64," + base64.b64encode(b"GIF89a-broken").decode(), ErrorKind.UNSUPPORTED_MEDIA),
    (base64.b64encode(b"just some text that is long enough").decode(), ErrorKind.UNSUPPORTED_MEDIA),
    (base64.b64encode(png()[:-30]).decode(), ErrorKind.INVALID_IMAGE),
    (base64.b64encode(jpeg((64, 64))[:300]).decode(), ErrorKind.INVALID_IMAGE),
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


def test_truncated_jpeg_is_400():
    assert kind_of(base64.b64encode(jpeg((400, 300))[:-200]).decode()) is ErrorKind.INVALID_IMAGE


def test_decompression_bomb_is_413_not_a_crash():
    with pytest.raises(ServiceError) as info:
        normalize(base64.b64encode(png_bomb()).decode())
    assert info.value.status == 413 and "MEDIA_MAX_PIXELS" in info.value.message


def test_pixel_limit_names_the_limit():
    with pytest.raises(ServiceError) as info:
        normalize(base64.b64encode(png((200, 200))).decode(), MEDIA_MAX_PIXELS=10_000)
    assert info.value.status == 413 and "10,000" in info.value.message


def test_byte_limit_is_checked_before_decoding():
    with pytest.raises(ServiceError) as info:
        normalize(base64.b64encode(b"\0" * 5000).decode(), MEDIA_MAX_IMAGE_BYTES=4096)
    assert info.value.status == 413 and "4,096" in info.value.message


def test_request_wide_limits():
    media = MediaNormalizer(policy(MEDIA_MAX_IMAGES=2, MEDIA_MAX_TOTAL_BYTES=10_000))
    with pytest.raises(ServiceError) as info:
        media.check_count(3)
    assert info.value.status == 400 and "limit is 2" in info.value.message
    with pytest.raises(ServiceError) as info:
        media.check_total([6000, 6000])
    assert info.value.status == 413 and "10,000" in info.value.message
    assert media.estimated_size("data:image/png;base64," + "A" * 400) == 300
    assert media.estimated_size("https://example.com/" + "A" * 400) == 0


def test_extreme_aspect_ratio_is_refused_as_the_processor_would():
    assert kind_of(base64.b64encode(png((4000, 10))).decode()) is ErrorKind.INVALID_IMAGE


# --- local files: only inside ALLOWED_LOCAL_MEDIA_PATH ------------------------------

@pytest.fixture
def media_dir(tmp_path):
    inside = tmp_path / "media"
    inside.mkdir()
    (inside / "ok.png").write_bytes(png())
    (tmp_path / "secret.png").write_bytes(png())
    os.symlink(tmp_path / "secret.png", inside / "escape.png")
    os.symlink(inside / "ok.png", inside / "alias.png")
    return inside


@pytest.mark.parametrize("ref", ["ok.png", "{dir}/ok.png", "file://{dir}/ok.png", "{dir}/alias.png",
                                 "{dir}/../media/ok.png"])
def test_files_inside_the_allowed_directory_are_read(media_dir, ref):
    image = normalize(ref.format(dir=media_dir), ALLOWED_LOCAL_MEDIA_PATH=str(media_dir))
    assert image.width == 32


@pytest.mark.parametrize("ref", ["{dir}/escape.png", "{dir}/../secret.png", "../secret.png",
                                 "file://{dir}/../secret.png", "/etc/hostname", "{dir}/missing.png", "{dir}"])
def test_nothing_outside_it_is(media_dir, ref):
    with pytest.raises(ServiceError) as info:
        normalize(ref.format(dir=media_dir), ALLOWED_LOCAL_MEDIA_PATH=str(media_dir))
    assert info.value.kind is ErrorKind.IMAGE_FETCH_REFUSED


# --- parsers: never anything but our error -------------------------------------------

@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_base64_parser_raises_only_our_error(text):
    try:
        decode_base64(text, 10_000)
    except ServiceError as exc:
        assert exc.status in (400, 413)


@given(st.from_regex(r"data:[a-z/+.-]{0,20}(;[a-z=0-9]{0,10}){0,2},[A-Za-z0-9+/= \n-]{0,80}", fullmatch=True)
       | st.text(max_size=100).map(lambda t: "data:" + t))
@settings(max_examples=300, deadline=None)
def test_data_url_parser_raises_only_our_error(url):
    try:
        parse_data_url(url, "image", 10_000)
    except ServiceError as exc:
        assert 400 <= exc.status < 500


def test_remote_fetching_can_be_switched_off():
    with pytest.raises(ServiceError) as info:
        asyncio.run(MediaNormalizer(policy(MEDIA_ALLOW_REMOTE=False), None).image("https://example.com/a.png"))
    assert info.value.kind is ErrorKind.IMAGE_FETCH_REFUSED and "MEDIA_ALLOW_REMOTE" in info.value.message


@pytest.mark.parametrize("max_visual_tokens", [None, 100_000])
def test_each_image_header_is_read_once(monkeypatch, max_visual_tokens):
    """With or without the context check from the headers (/infer, /analyze), Pillow opens
    each image's bytes once: the header read for the check is the one decoded after it."""
    from vlserve.media import header as header_module
    from vlserve.media import images as images_module

    opened: list[int] = []
    real_open = header_module.open_image

    def counting_open(data: bytes):
        opened.append(len(data))
        return real_open(data)

    monkeypatch.setattr(header_module, "open_image", counting_open)
    monkeypatch.setattr(images_module, "open_image", counting_open)
    sources = [jpeg((640, 480)), png((300, 200)), jpeg((4000, 3000))]
    results = asyncio.run(MediaNormalizer(policy()).images(sources, max_visual_tokens=max_visual_tokens))
    assert [(r.width, r.height) for r in results] == [(640, 480), (300, 200), (4000, 3000)]
    assert sorted(opened) == sorted(len(s) for s in sources)
