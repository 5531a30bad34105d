"""Benchmark: what rendering a PDF page costs, on one core, at the default pixel budget.

    python bench/pdf_pages.py [--pages 20] [--write bench/RESULTS.md]

Two kinds of page, made here: a text page (60 lines of Helvetica, as a report or a paper
has) and a scanned page (an A4 photo-like image at 300 DPI, as a scanner makes). Each is
rendered by the same function the gateway's PDF workers run (media/pdf.py), in this
process, and its CPU time per page measured; the JPEG it becomes is what the image path
then prepares like any image.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import time

from PIL import Image

from vlserve.config import Settings
from vlserve.media.pdf import _render
from vlserve.tools.loadgen import sample_image


def text_pdf(pages: int) -> bytes:
    """A PDF of `pages` text pages, written by hand (no PDF library writes plain text pages)."""
    lines = [f"Line {n}: the quarterly figures were reviewed and found to be in order, {n * 37} units." for n in
             range(60)]
    stream = "BT /F1 10 Tf 56 800 Td 12 TL " + " ".join(f"({line}) '" for line in lines) + " ET"
    objects = ["<< /Type /Catalog /Pages 2 0 R >>",
               "<< /Type /Pages /Kids [" + " ".join(f"{4 + 2 * i} 0 R" for i in range(pages)) + f"] /Count {pages} >>",
               "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for i in range(pages):
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "
                       f"/Contents {5 + 2 * i} 0 R >>")
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    out, offsets = io.BytesIO(), []
    out.write(b"%PDF-1.4\n")
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n{body}\nendobj\n".encode())
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    out.write("".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def scanned_pdf(pages: int) -> bytes:
    import base64

    data_url = sample_image((2480, 3508))
    scan = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB")
    buf = io.BytesIO()
    scan.save(buf, "PDF", save_all=True, append_images=[scan] * (pages - 1), resolution=300)
    return buf.getvalue()


def per_page_ms(data: bytes, pages: int, budget: int) -> tuple[float, int]:
    started = time.process_time()
    outcome = _render(data, None, budget, pages)
    assert outcome[0] == "ok", outcome
    jpeg_bytes = sum(len(page[1]) for page in outcome[2]) // pages
    return (time.process_time() - started) / pages * 1000, jpeg_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--write", help="append the results as Markdown to this file")
    args = parser.parse_args()
    budget = Settings().media_image_max_pixels
    rows = []
    for name, make in (("text page (A4, 60 lines)", text_pdf), ("scanned page (A4 at 300 DPI, JPEG)", scanned_pdf)):
        ms, size = per_page_ms(make(args.pages), args.pages, budget)
        rows.append(f"| {name} | {ms:.1f} | {size / 1000:.0f} KB |")
        print(name, round(ms, 1), "ms/page")
    text = (f"\n## PDF pages: render cost (`bench/pdf_pages.py`)\n\nCommand: `python bench/pdf_pages.py --pages "
            f"{args.pages}`  \nDate: {datetime.date.today()}; machine: {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}; one core, budget {budget:,} pixels\n\n"
            "| page | CPU ms per page (render + JPEG) | JPEG per page |\n|---|---:|---:|\n" + "\n".join(rows) + "\n")
    print(text)
    if args.write:
        with open(args.write, "a") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
