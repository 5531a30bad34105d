"""The cache of normalised images: a repeated image costs a hash and comes out byte for
byte the same; what decides the output is in the key; it stays within its bytes; the
output for the same input is the same in another process (so engines' caches hit across
gateways and restarts)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from vlserve.errors import ErrorKind, ServiceError
from vlserve.media import ImageHints, MediaNormalizer

from ...media_helpers import photo, png, policy

MiB = 1024 * 1024


def normalizer(cache_bytes: int = 64 * MiB, **overrides) -> MediaNormalizer:
    return MediaNormalizer(policy(**overrides), cache_bytes=cache_bytes)


def run(media: MediaNormalizer, *sources: bytes, hints=None, max_visual_tokens=None):
    return asyncio.run(media.images(list(sources), hints, max_visual_tokens))


def test_a_repeated_image_is_a_hit_with_the_same_bytes_a_fresh_gateway_makes():
    big = photo((3000, 2000))  # shrunk and re-encoded: the expensive path
    media = normalizer()
    first, = run(media, big)
    again, = run(media, big)
    stats = media.cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (1, 1, 1)
    assert again.data_url == first.data_url and first.reencoded
    fresh, = run(normalizer(cache_bytes=0), big)
    assert fresh == first


def test_the_same_bytes_under_another_budget_are_another_entry():
    big = photo((3000, 2000))
    media = normalizer()
    default, = run(media, big)
    low, = run(media, big, hints=[ImageHints(detail="low")])
    assert media.cache.stats().misses == 2 and media.cache.stats().entries == 2
    assert low.sent_width * low.sent_height < default.sent_width * default.sent_height


def test_least_recently_used_images_leave_first_and_the_bytes_stay_bounded():
    images = [png((64, 48), color=shade) for shade in range(6)]
    one_entry = len(run(normalizer(cache_bytes=0), images[0])[0].data_url)
    media = normalizer(cache_bytes=3 * (one_entry + 600))
    for image in images[:3]:
        run(media, image)
    run(media, images[0])  # used again: now the most recent
    run(media, images[3])  # pushes out images[1], the least recently used
    assert media.cache.stats().entries == 3 and media.cache.stats().bytes <= media.cache.max_bytes
    hits = media.cache.stats().hits
    run(media, images[0])
    assert media.cache.stats().hits == hits + 1
    run(media, images[1])
    assert media.cache.stats().hits == hits + 1  # a miss: it had been pushed out


def test_an_image_larger_than_the_whole_cache_is_not_kept():
    media = normalizer(cache_bytes=1024)
    run(media, photo((800, 600)))
    assert media.cache.stats().entries == 0 and media.cache.stats().bytes == 0


def test_refusals_are_not_kept_and_say_the_same_every_time():
    media = normalizer()
    broken = png((64, 48))[:-40]
    for _ in range(2):
        with pytest.raises(ServiceError) as refused:
            run(media, broken)
        assert refused.value.kind is ErrorKind.INVALID_IMAGE
    assert media.cache.stats().entries == 0 and media.cache.stats().misses == 2


def test_a_cached_image_still_counts_against_the_context():
    big = photo((3000, 2000))
    refusals = []
    for media in (normalizer(cache_bytes=0), normalizer()):
        run(media, big)  # the second normaliser now has it
        with pytest.raises(ServiceError) as refused:
            run(media, big, big, max_visual_tokens=2000)  # about 1,250 visual tokens each
        refusals.append(refused.value)
    uncached, cached = refusals
    assert cached.kind is uncached.kind is ErrorKind.CONTEXT_TOO_LONG and cached.message == uncached.message


def counting_preparations(monkeypatch) -> list[int]:
    from vlserve.media import normalizer as module

    calls, prepare = [], module.prepare_image
    monkeypatch.setattr(module, "prepare_image", lambda *args: calls.append(1) or prepare(*args))
    return calls


def test_a_burst_of_requests_about_one_new_image_prepares_it_once(monkeypatch):
    calls = counting_preparations(monkeypatch)
    media, big = normalizer(), photo((3000, 2000))

    async def burst():
        return await asyncio.gather(*(media.images([big]) for _ in range(8)), media.images([big, big]))

    results = asyncio.run(burst())
    assert len(calls) == 1
    assert len({image.data_url for images in results for image in images}) == 1
    assert media.cache.stats().entries == 1


def test_a_requester_that_leaves_does_not_stop_the_preparation_for_the_others(monkeypatch):
    from vlserve.media import normalizer as module

    started, release, prepare = threading.Event(), threading.Event(), module.prepare_image
    calls = []

    def held(*args):
        calls.append(1)
        started.set()
        release.wait(30)
        return prepare(*args)

    monkeypatch.setattr(module, "prepare_image", held)
    media, big = normalizer(), photo((3000, 2000))

    async def first_leaves():
        leaving = asyncio.ensure_future(media.images([big]))
        await asyncio.to_thread(started.wait, 30)
        staying = asyncio.ensure_future(media.images([big]))  # joins it, or finds it cached since
        leaving.cancel()
        release.set()
        return await staying

    image, = asyncio.run(first_leaves())
    assert image.reencoded and len(calls) == 1 and media.cache.stats().entries == 1


def test_a_broken_image_asked_for_while_it_is_being_prepared_is_refused_once_and_not_kept(monkeypatch):
    # Four copies in one request are asked for together, while the first is being prepared
    # (a refusal is not kept: a request that comes after it is refused by its own try).
    calls = counting_preparations(monkeypatch)
    media, broken = normalizer(), png((64, 48))[:-40]
    with pytest.raises(ServiceError) as refused:
        run(media, *[broken] * 4)
    assert refused.value.kind is ErrorKind.INVALID_IMAGE
    assert len(calls) == 1 and media.cache.stats().entries == 0


def test_off_when_its_size_is_zero():
    media = normalizer(cache_bytes=0)
    run(media, png())
    run(media, png())
    assert media.cache.stats().hits == media.cache.stats().misses == 0


def test_an_inline_image_is_found_by_its_text_and_a_file_by_what_it_holds_now(tmp_path):
    """A data URL or base64 is its own content, so its text is its key (a hit decodes
    nothing); a path names a file whose content may have changed since."""
    inline = "data:image/png;base64," + base64.b64encode(png(color=1)).decode()
    media = normalizer(ALLOWED_LOCAL_MEDIA_PATH=str(tmp_path))
    assert run(media, inline)[0].data_url == run(media, inline)[0].data_url
    assert (media.cache.stats().hits, media.cache.stats().misses) == (1, 1)
    picture = tmp_path / "picture.png"
    picture.write_bytes(png(color=2))
    before, = run(media, str(picture))
    picture.write_bytes(png((40, 30), color=3))
    after, = run(media, str(picture))
    assert (after.width, after.height) == (40, 30) and after.data_url != before.data_url


PREPARE_IN_A_NEW_PROCESS = """
import asyncio, hashlib, sys
from tests.media_helpers import policy
from vlserve.media import MediaNormalizer
data = open(sys.argv[1], "rb").read()
image = asyncio.run(MediaNormalizer(policy()).image_from_bytes(data))
print(hashlib.sha256(image.data_url.encode()).hexdigest())
"""


@pytest.mark.parametrize("make", [lambda: photo((3000, 2000)), lambda: png((900, 700), mode="RGBA")],
                         ids=["shrunk-jpeg", "flattened-png"])
def test_another_process_makes_byte_identical_output(make, tmp_path):
    source = tmp_path / "image"
    source.write_bytes(make())
    here, = run(normalizer(), source.read_bytes())
    there = subprocess.run([sys.executable, "-c", PREPARE_IN_A_NEW_PROCESS, str(source)], capture_output=True,
                           text=True, cwd=Path(__file__).parents[3], check=True).stdout.strip()
    assert there == hashlib.sha256(here.data_url.encode()).hexdigest()
