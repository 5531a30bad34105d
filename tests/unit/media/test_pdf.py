"""PDF pages rendered by PDFium in worker processes: at the pixel budget, upright, in
order; hostile and broken files refused with a reason; a dead or stuck worker costs only
its own request."""

from __future__ import annotations

import pytest

from vlserve.errors import ServiceError
from vlserve.media.pdf import PdfLimits, PdfRenderer, is_pdf, parse_pages

from ...media_helpers import pdf

BUDGET = 1280 * 32 * 32  # MEDIA_IMAGE_MAX_PIXELS' default


@pytest.fixture
def renderer():
    made = PdfRenderer(PdfLimits(max_pages=5, workers=1, render_timeout_s=60))
    yield made
    made.close()


@pytest.mark.parametrize("spec, pages", [("1-3,7", [1, 2, 3, 7]), (" 2 ", [2]), ("3,1-2,2", [3, 1, 2]), (None, None),
                                         ("", None)])
def test_page_ranges(spec, pages):
    assert parse_pages(spec) == pages


@pytest.mark.parametrize("spec", ["0", "3-1", "a", "1-", "1,,2", "-2"])
def test_bad_page_ranges_say_what_is_expected(spec):
    with pytest.raises(ServiceError) as bad:
        parse_pages(spec)
    assert bad.value.status == 400 and bad.value.param == "pages"


async def test_pages_come_in_order_at_the_budget_whatever_their_size(renderer):
    sizes = [(612, 792), (842, 595), (300, 200)]  # letter, A4 landscape, a small card
    count, pages = await renderer.render(pdf(sizes), None, BUDGET)
    assert count == 3 and [page.number for page in pages] == [1, 2, 3]
    for page, (width, height) in zip(pages, sizes, strict=True):
        assert 0.97 * BUDGET <= page.width * page.height <= BUDGET  # at the budget, not at a fixed DPI
        assert page.width / page.height == pytest.approx(width / height, rel=0.02)
        assert page.jpeg[:2] == b"\xff\xd8"


async def test_a_rotated_page_is_rendered_upright(renderer):
    import io

    from PIL import Image

    _, (page,) = await renderer.render(pdf([(400, 600)], rotate={0: 90}), None, BUDGET)
    assert page.width > page.height  # /Rotate 90 turns the portrait page on its side
    image = Image.open(io.BytesIO(page.jpeg)).convert("L")
    # the dark band drawn along the page's top now runs down one side, as a reader shows it
    left = image.crop((0, 0, image.width // 20, image.height)).resize((1, 1)).getpixel((0, 0))
    right = image.crop((image.width - image.width // 20, 0, image.width, image.height)).resize((1, 1)).getpixel((0, 0))
    assert min(left, right) < 60 < max(left, right)


async def test_chosen_pages_only(renderer):
    count, pages = await renderer.render(pdf([(100, 100)] * 4), [4, 2], BUDGET)
    assert count == 4 and [page.number for page in pages] == [4, 2]


async def test_a_huge_page_is_still_rendered_at_the_budget(renderer):
    """A PDF bomb by page size: 200 x 200 inches is rendered small, not at 72 DPI."""
    _, (page,) = await renderer.render(pdf([(100, 100)], media_box={0: (14400, 14400)}), None, BUDGET)
    assert page.width * page.height <= BUDGET


@pytest.mark.parametrize("make, status, words", [
    (lambda: pdf(password="secret"), 400, "encrypted"),
    (lambda: pdf([(100, 100)] * 2)[:-200], 400, "not a PDF that can be read"),   # truncated
    (lambda: b"%PDF-1.7\n" + b"not really a PDF " * 100, 400, "not a PDF that can be read"),
    (lambda: pdf([(50, 50)] * 6), 413, "MEDIA_MAX_PDF_PAGES"),                   # over max_pages
])
async def test_files_that_cannot_be_read_are_refused_with_a_reason(renderer, make, status, words):
    with pytest.raises(ServiceError) as refused:
        await renderer.render(make(), None, BUDGET)
    assert refused.value.status == status and words in refused.value.message


async def test_a_page_past_the_end_and_a_file_over_the_size_limit(renderer):
    with pytest.raises(ServiceError) as past:
        await renderer.render(pdf([(100, 100)] * 2), [3], BUDGET)
    assert past.value.param == "pages" and "2 pages" in past.value.message
    small = PdfRenderer(PdfLimits(max_bytes=1024))
    with pytest.raises(ServiceError) as big:
        await small.render(pdf([(300, 300)]), None, BUDGET)
    assert big.value.status == 413 and "MEDIA_MAX_PDF_BYTES" in big.value.message


async def test_a_worker_killed_mid_render_costs_a_retry_not_the_request(renderer):
    """A pool can die of another file: a render it took down is tried once more, on a new pool."""
    import asyncio

    renderer.limits = PdfLimits(max_pages=60, workers=1)
    await renderer.render(pdf(), None, BUDGET)  # the pool is up
    rendering = asyncio.ensure_future(renderer.render(pdf([(1200, 1600)] * 20), None, BUDGET))
    await asyncio.sleep(0)  # the job is handed to the worker
    for process in list(renderer._pool._processes.values()):
        process.kill()
    count, pages = await rendering
    assert count == 20 and len(pages) == 20


async def test_a_file_over_the_worker_memory_fails_alone():
    small = PdfRenderer(PdfLimits(workers=1, worker_memory_bytes=400 * 1024 * 1024))
    try:
        with pytest.raises(ServiceError) as failed:  # 60 MP of RGBA is 240 MB, and its RGB copy more
            await small.render(pdf([(100, 100)], media_box={0: (3000, 3000)}), None, 60_000_000)
        assert failed.value.status == 400 and "MemoryError" in failed.value.message
        count, _ = await small.render(pdf(), None, BUDGET)  # the next file is rendered as usual
        assert count == 1
    finally:
        small.close()


async def test_a_render_past_its_time_is_stopped_and_the_next_one_works():
    hurried = PdfRenderer(PdfLimits(workers=1, render_timeout_s=1e-6))
    try:
        with pytest.raises(ServiceError) as late:
            await hurried.render(pdf(), None, BUDGET)
        assert "MEDIA_PDF_RENDER_TIMEOUT_S" in late.value.message
    finally:
        hurried.close()
    assert await PdfRenderer(PdfLimits(workers=1)).render(pdf(), None, BUDGET)


def test_the_pdf_signature_may_follow_a_little_junk():
    assert is_pdf(b"%PDF-1.4") and is_pdf(b"\n\n%PDF-1.7") and not is_pdf(b"\x89PNG")


async def test_a_text_page_is_rendered_with_its_text(renderer):
    import io

    from PIL import Image

    from ...media_helpers import text_pdf

    count, (page,) = await renderer.render(text_pdf(2), [2], BUDGET)
    assert count == 2
    ink = Image.open(io.BytesIO(page.jpeg)).convert("L").point(lambda v: 255 if v < 128 else 0)
    assert ink.getbbox() is not None  # dark glyphs on the white page
    assert sum(ink.histogram()[255:]) > 0.005 * page.width * page.height
