"""Fuzzing the whole normaliser: random and mutated bytes in, only our 4xx errors out.

Bounded for CI by hypothesis' example counts; raise them locally with
`--hypothesis-profile=fuzz` (see tests/conftest.py) for a longer run.
"""

from __future__ import annotations

import asyncio
import base64

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.media_helpers import encode, policy
from vlserve.errors import ServiceError
from vlserve.media import MediaNormalizer

# 400 examples each in CI (a few seconds); the "fuzz" profile's count when it is larger.
FUZZ = settings(max_examples=max(400, settings.default.max_examples), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
NORMALIZER = MediaNormalizer(policy(MEDIA_MAX_PIXELS=4_000_000))
SEEDS = [encode(Image.new("RGB", (48, 32), (90, 20, 200)), fmt) for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")]


def survives(data: bytes) -> None:
    try:
        asyncio.run(NORMALIZER.image_from_bytes(data))
    except ServiceError as exc:
        assert 400 <= exc.status < 500, exc


@given(st.binary(max_size=2048))
@FUZZ
def test_random_bytes(data):
    survives(data)


@st.composite
def mutated_image(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    cut = draw(st.integers(len(data) // 2, len(data)))
    return bytes(data[:cut])


@given(mutated_image())
@FUZZ
def test_mutated_images(data):
    survives(data)


@given(mutated_image(), st.sampled_from(["data:image/png;base64,", "data:;base64,", ""]))
@FUZZ
def test_mutated_images_as_text(data, prefix):
    try:
        asyncio.run(NORMALIZER.image(prefix + base64.b64encode(data).decode()))
    except ServiceError as exc:
        assert 400 <= exc.status < 500
