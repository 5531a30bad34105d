"""Image correctness (orientation, colour modes, frames) and downscaling to the model's budget."""

from __future__ import annotations

import base64
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.media_helpers import encode, from_bytes, halves, jpeg, photo, with_orientation
from vlserve.errors import ServiceError
from vlserve.media import ImageHints, PixelBudget, smart_resize
from vlserve.media.jpeg import decode_scaled

BUDGET = PixelBudget(32, 65_536, 1280 * 32 * 32)


def decoded(image) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(image.data_url.split(",", 1)[1])))


def test_exif_orientation_is_applied_and_sizes_are_the_users():
    image = from_bytes(with_orientation(halves(), 6))  # 6: rotate 90° clockwise to view
    assert (image.width, image.height) == (20, 40) and image.reencoded
    upright = decoded(image).convert("RGB")
    assert upright.size == (20, 40)
    top, bottom = upright.getpixel((10, 5)), upright.getpixel((10, 35))
    assert top[0] > 200 and bottom[2] > 200  # the red left half is now on top


def test_alpha_is_composited_over_white():
    img = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    img.paste((255, 0, 0, 255), (0, 0, 8, 16))
    out = decoded(from_bytes(encode(img, "PNG")))
    assert out.mode == "RGB" and out.format == "PNG"
    assert out.getpixel((12, 8)) == (255, 255, 255) and out.getpixel((2, 8)) == (255, 0, 0)


def test_palette_with_transparency():
    img = Image.new("P", (16, 16), 0)
    img.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    img.paste(1, (0, 0, 8, 16))
    out = decoded(from_bytes(encode(img, "PNG", transparency=0)))
    assert out.getpixel((12, 8)) == (255, 255, 255) and out.getpixel((2, 8)) == (0, 255, 0)


def test_cmyk_jpeg_becomes_rgb():
    out = decoded(from_bytes(encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG")))
    assert out.mode == "RGB" and out.getpixel((8, 8))[0] > 200


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    img = Image.new("I;16", (16, 16), 32768)
    out = decoded(from_bytes(encode(img, "PNG")))
    assert out.mode == "L" and 120 <= out.getpixel((8, 8)) <= 136


def test_animation_uses_the_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = decoded(from_bytes(buf.getvalue()))
    assert getattr(out, "n_frames", 1) == 1 and out.convert("RGB").getpixel((8, 8))[0] > 200


def test_avif_is_accepted_and_reencoded():
    image = from_bytes(encode(Image.new("RGB", (64, 48), (0, 128, 0)), "AVIF"))
    assert image.mime == "image/jpeg" and (image.width, image.height) == (64, 48)


# --- downscaling --------------------------------------------------------------------

@given(st.integers(32, 20_000), st.integers(32, 20_000),
       st.sampled_from([(28, 3136, 1003520), (32, 65536, 1310720), (32, 65536, 16777216), (16, 1024, 262144)]))
@settings(max_examples=500, deadline=None)
def test_smart_resize_is_transformers_own(height, width, bounds):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

    factor, lo, hi = bounds
    try:
        expected = hf_smart_resize(height, width, factor=factor, min_pixels=lo, max_pixels=hi)
    except ValueError:
        with pytest.raises(ServiceError):
            smart_resize(height, width, PixelBudget(factor, lo, hi))
        return
    assert smart_resize(height, width, PixelBudget(factor, lo, hi)) == expected


def grid(processor, img: Image.Image, budget: PixelBudget):
    out = processor.image_processor(images=[img.convert("RGB")], return_tensors="pt",
                                    size={"shortest_edge": budget.min_pixels, "longest_edge": budget.max_pixels})
    return out["image_grid_thw"].tolist()


@pytest.mark.parametrize("size, orientation", [((4000, 3000), 1), ((4000, 3000), 6), ((2560, 1440), 1),
                                               ((5000, 700), 1), ((1210, 1100), 6), ((3000, 4000), 8)])
def test_downscaled_image_is_what_the_processor_would_make(processor, size, orientation):
    raw = halves(size)
    data = with_orientation(raw, orientation)
    image = from_bytes(data)
    upright = decoded(image)
    expected_h, expected_w = smart_resize(image.height, image.width, BUDGET)
    assert (upright.height, upright.width) == (expected_h, expected_w) == (image.sent_height, image.sent_width)
    assert image.sent_width * image.sent_height <= BUDGET.max_pixels
    # The engine's processor then leaves it alone: the same visual tokens as the original.
    original = Image.open(io.BytesIO(data))
    from PIL import ImageOps
    assert grid(processor, upright, BUDGET) == grid(processor, ImageOps.exif_transpose(original), BUDGET)
    assert image.sent_bytes < image.nbytes
    # And it is the user's picture, turned upright, at that size.
    expected = ImageOps.exif_transpose(original).convert("RGB").resize(upright.size, Image.Resampling.BICUBIC)
    assert mean_difference(upright.convert("RGB"), expected) < 4


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    from PIL import ImageChops, ImageStat
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / len(a.getbands())


@pytest.mark.parametrize("size", [(1210, 1100), (1523, 1142), (2000, 1300)])
def test_a_little_over_budget_travels_as_is_and_the_engine_shrinks_it_the_same(processor, size):
    data = photo(size)
    image = from_bytes(data)
    assert not image.reencoded and base64.b64decode(image.data_url.split(",", 1)[1]) == data
    # The engine, told the budget, makes the size the gateway would have made.
    target_h, target_w = smart_resize(size[1], size[0], BUDGET)
    assert grid(processor, Image.open(io.BytesIO(data)), BUDGET) == [[1, target_h // 16, target_w // 16]]


def test_over_budget_is_shrunk_here_when_the_engine_is_not_told_the_budget():
    for form in ("off", "flat"):  # flat: vLLM, which may refuse it (and is then not sent it)
        image = from_bytes(photo((1523, 1142)), UPSTREAM_BASE_URL="http://127.0.0.1:9", UPSTREAM_MM_KWARGS=form)
        assert image.reencoded and (image.sent_height, image.sent_width) == smart_resize(1142, 1523, BUDGET)
    told = from_bytes(photo((1523, 1142)), UPSTREAM_BASE_URL="http://127.0.0.1:9", UPSTREAM_MM_KWARGS="lmdeploy")
    assert not told.reencoded
    well_over = from_bytes(photo((2400, 1600)))  # more than twice the budget: shrunk here whatever the engine
    assert well_over.reencoded and (well_over.sent_height, well_over.sent_width) == smart_resize(1600, 2400, BUDGET)


@pytest.mark.parametrize("size", [(640, 480), (1523, 1142), (3000, 2200)])  # the last is shrunk
@pytest.mark.parametrize("progressive", [False, True])
def test_a_cut_jpeg_is_refused_whether_sent_as_it_is_or_shrunk(size, progressive):
    data = photo(size, progressive=progressive)
    for keep in (0.3, 0.7, 0.97):
        with pytest.raises(ServiceError) as info:
            from_bytes(data[:int(len(data) * keep)])
        assert info.value.status == 400 and "decoded" in info.value.message


def test_a_jpeg_with_stray_bytes_is_still_shrunk_as_before():
    """libjpeg warns about stray bytes before a marker and Pillow decodes the picture
    anyway; the faster decoder refuses any warning, so such a file must take the
    slower path, not become a 400."""
    clean = photo((3000, 2200))
    tables = clean.index(b"\xff\xdb")  # the first quantisation table's marker
    for flawed in (clean[:tables] + b"\x00\x11\x22" + clean[tables:],
                   clean[:tables] + b"\x00\x11\x22" + clean[tables:] + b"trailing data"):
        assert decode_scaled(flawed, (1300, 900), "RGB") is None  # so this takes the slower path
        image = from_bytes(flawed)
        assert image.reencoded and (image.sent_height, image.sent_width) == smart_resize(2200, 3000, BUDGET)
        assert mean_difference(decoded(image), decoded(from_bytes(clean))) < 2


def test_a_greyscale_jpeg_over_budget_stays_greyscale():
    grey = Image.linear_gradient("L").resize((3600, 2400))
    image = from_bytes(encode(grey, "JPEG", quality=90))
    out = decoded(image)
    assert out.mode == "L" and (out.height, out.width) == smart_resize(2400, 3600, BUDGET)
    assert mean_difference(out, grey.resize(out.size)) < 2


def test_images_within_budget_travel_byte_for_byte():
    data = jpeg((1000, 800))
    image = from_bytes(data)
    assert not image.reencoded and base64.b64decode(image.data_url.split(",", 1)[1]) == data


def test_downscaling_can_be_switched_off():
    image = from_bytes(jpeg((4000, 3000)), MEDIA_DOWNSCALE=False)
    assert not image.reencoded and (image.sent_width, image.sent_height) == (4000, 3000)


@pytest.mark.parametrize("hints, max_pixels", [
    (ImageHints(detail="low"), 256 * 32 * 32),
    (ImageHints(max_pixels=200_000), 200_000),
    (ImageHints(max_pixels=50_000_000), 1280 * 32 * 32),  # never beyond the operator's budget
    (ImageHints(detail="high"), 1280 * 32 * 32),
])
def test_per_request_hints_within_operator_bounds(hints, max_pixels):
    image = from_bytes(jpeg((2000, 1500)), hints)
    assert image.sent_width * image.sent_height <= max_pixels
    budget = PixelBudget(32, 65_536 if max_pixels >= 65_536 else max_pixels, max_pixels)
    assert (image.sent_height, image.sent_width) == smart_resize(1500, 2000, budget)


@pytest.mark.parametrize("size", [(20000, 100), (19000, 100), (100, 20000), (12000, 61), (30000, 151)])
def test_long_thin_images_are_resized_to_a_shape_the_processor_accepts(processor, size):
    """Inside the accepted 200:1, rounding the short side down used to give 253:1 (a 500)."""
    from PIL import Image as PILImage

    image = from_bytes(encode(PILImage.new("RGB", size, (120, 40, 200)), "PNG"))
    sent = (image.sent_width, image.sent_height)
    assert max(sent) / min(sent) <= 200
    decoded = PILImage.open(io.BytesIO(base64.b64decode(image.data_url.split(",", 1)[1])))
    processor.image_processor(images=[decoded], return_tensors="pt")  # the processor takes it


def tiled_tiff(side: int = 64, tile: int = 8192) -> bytes:
    """A tiny greyscale TIFF whose one tile is tile x tile: libtiff allocates the whole tile."""
    import struct
    import zlib

    data = zlib.compress(b"\0" * (tile * tile), 9)
    entries = sorted([(256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1),
                      (284, 3, 1), (322, 4, tile), (323, 4, tile), (324, 4, 0), (325, 4, len(data))])
    ifd_size = 2 + 12 * len(entries) + 4
    out = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = 8 + ifd_size if tag == 324 else value
        out += struct.pack("<HHII", tag, kind, 1, value) if kind == 4 else struct.pack("<HHIHH", tag, kind, 1, value, 0)
    return out + b"\0\0\0\0" + data


def test_a_tiff_with_tiles_far_larger_than_the_image_is_refused_before_decoding():
    """Found by review: 1 MB of TIFF made libtiff allocate 1 GB for a 64x64 picture."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ServiceError) as info:
        from_bytes(tiled_tiff())
    assert info.value.status == 400 and "tiles or strips" in info.value.message
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 32 * 1024  # KiB: nothing big was made
