"""Boxes in the model's convention map back to the user's pixels, whatever the resizing."""

from __future__ import annotations

import pytest

from tests.media_helpers import from_bytes, halves, jpeg, with_orientation
from vlserve.analysis import TaskInput, parse_result
from vlserve.analysis.geometry import SCALE, to_pixels_box
from vlserve.media import ImageHints


def to_model_box(box: list[float], width: int, height: int) -> list[int]:
    """A box in the user's pixels as the model writes it (0-1000 in each axis)."""
    x1, y1, x2, y2 = box
    return [round(x1 / width * SCALE), round(y1 / height * SCALE),
            round(x2 / width * SCALE), round(y2 / height * SCALE)]

SIZES = [(640, 480), (1920, 1080), (4000, 3000), (333, 777), (5000, 700)]
RESIZE = [{}, {"MEDIA_DOWNSCALE": "false"}, {"MEDIA_IMAGE_MAX_PIXELS": "262144"}]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("resize", RESIZE)
def test_round_trip_through_the_gateways_resizing(size, resize):
    image = from_bytes(jpeg(size), ImageHints(), **resize)
    assert (image.width, image.height) == size  # results refer to the user's image, not the sent one
    w, h = size
    for box in ([0, 0, w, h], [w * 0.1, h * 0.2, w * 0.55, h * 0.9], [w / 3, h / 7, w / 2, h / 2]):
        model_box = to_model_box(box, w, h)
        text = f'```json\n[{{"bbox_2d": {model_box}, "label": "thing"}}]\n```'
        got = parse_result(TaskInput("detect"), text, image.width, image.height)["objects"][0]["box"]
        # The model's scale has 1000 steps per side: exact to within half a step, plus rounding.
        tolerance = [max(1.0, w / 2000 + 0.5), max(1.0, h / 2000 + 0.5)] * 2
        assert all(abs(g - b) <= t for g, b, t in zip(got, box, tolerance, strict=True)), (got, box)


def test_rotated_photos_use_upright_coordinates():
    image = from_bytes(with_orientation(halves((400, 200)), 6))
    assert (image.width, image.height) == (200, 400)
    assert to_pixels_box([0, 0, 1000, 500], image.width, image.height) == [0, 0, 200, 200]


def test_small_images_round_trip_to_the_pixel():
    for w, h in [(100, 100), (640, 480), (1000, 1000)]:
        for box in ([1, 2, 50, 60], [0, 0, w, h]):
            assert to_pixels_box(to_model_box(box, w, h), w, h) == box
