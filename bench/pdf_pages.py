"""Benchmark: what a PDF page costs the gateway, and how fast documents go end to end.

    python bench/pdf_pages.py [--pages 20] [--document-pages 64] [--write bench/RESULTS.md]

Two kinds of page, made here: a text page (60 lines of Helvetica, as a report or a paper
has) and a scanned page (an A4 photo-like image at 300 DPI, as a scanner makes). Each is
rendered by the same function the gateway's PDF workers run (media/pdf.py), in this
process, and its CPU time per page measured; the JPEG it becomes is what the image path
then prepares like any image.

End to end: a real gateway in front of 1, 2 and 4 stand-in engines (bench/fake_upstream.py)
that pace like a real one: each answers 8 requests at once (its batch), each in 2 s (a page
of about 200 tokens at 100 tokens/s). `/analyze` task document reads a 64-page text PDF;
pages per second from the wall time. This measures whether the gateway keeps replicas
busy (rendering, pages in flight, admission), not a model's speed.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import io
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

from vlserve.config import Settings
from vlserve.media.pdf import _render
from vlserve.tools.loadgen import sample_image

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from gateway import wait_ready  # noqa: E402
from media_helpers import text_pdf  # noqa: E402
from servers import free_port  # noqa: E402

ENGINE_BATCH, ENGINE_CHUNKS, ENGINE_DELAY_MS = 8, 200, 10  # 8 at once, 2 s each


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


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def pages_per_second(replicas: int, document: bytes, pages: int) -> float:
    engines = []
    for _ in range(replicas):
        port = free_port()
        engines.append((port, start([sys.executable, str(ROOT / "bench" / "fake_upstream.py"), "--port", str(port),
                                     "--chunks", str(ENGINE_CHUNKS), "--delay-ms", str(ENGINE_DELAY_MS),
                                     "--batch", str(ENGINE_BATCH)])))
    for port, _ in engines:
        wait_ready(f"http://127.0.0.1:{port}/v1/models")
    port = free_port()
    gateway = start([sys.executable, "-m", "vlserve.cli", "serve"], env={
        "PORT": str(port), "ACCESS_LOG": "false", "LOG_LEVEL": "warning", "USAGE_FILE": "off",
        "UPSTREAM_BASE_URL": ",".join(f"http://127.0.0.1:{p}" for p, _ in engines),
        "MEDIA_PDF_PAGES_IN_FLIGHT": str(ENGINE_BATCH * replicas)})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/health")
        body = {"task": "document", "image": base64.b64encode(document).decode()}
        started = time.perf_counter()
        answer = httpx.post(f"{url}/analyze", json=body, timeout=600).json()
        elapsed = time.perf_counter() - started
        assert answer["pages_failed"] == 0 and len(answer["pages"]) == pages, answer
        return pages / elapsed
    finally:
        for proc in [gateway, *(proc for _, proc in engines)]:
            proc.terminate()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=20, help="pages rendered per kind")
    parser.add_argument("--document-pages", type=int, default=64, help="pages of the end-to-end document")
    parser.add_argument("--write", help="append the results as Markdown to this file")
    args = parser.parse_args()
    budget = Settings().media_image_max_pixels
    rows = []
    for name, make in (("text page (A4, 60 lines)", text_pdf), ("scanned page (A4 at 300 DPI, JPEG)", scanned_pdf)):
        ms, size = per_page_ms(make(args.pages), args.pages, budget)
        rows.append(f"| {name} | {ms:.1f} | {size / 1000:.0f} KB |")
        print(name, round(ms, 1), "ms/page")
    document = text_pdf(args.document_pages)
    speeds = {replicas: pages_per_second(replicas, document, args.document_pages) for replicas in (1, 2, 4)}
    print("pages/s", speeds)
    ideal = ENGINE_BATCH / (ENGINE_CHUNKS * ENGINE_DELAY_MS / 1000)
    end_to_end = "\n".join(f"| {n} | {speed:.1f} | {speed / (ideal * n):.0%} |" for n, speed in speeds.items())
    text = (f"\n## PDF pages: render cost and documents end to end (`bench/pdf_pages.py`)\n\nCommand: "
            f"`python bench/pdf_pages.py --pages {args.pages} --document-pages {args.document_pages}`  \n"
            f"Date: {datetime.date.today()}; machine: {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}; budget {budget:,} pixels\n\n"
            "| page | CPU ms per page (render + JPEG, one core) | JPEG per page |\n|---|---:|---:|\n"
            + "\n".join(rows) + "\n\n"
            f"A {args.document_pages}-page text PDF through `/analyze` (document), engines answering "
            f"{ENGINE_BATCH} at once in {ENGINE_CHUNKS * ENGINE_DELAY_MS / 1000:g} s each "
            f"({ideal:g} pages/s per replica at best):\n\n"
            "| replicas | pages/s | of what the replicas could do |\n|---:|---:|---:|\n" + end_to_end + "\n")
    print(text)
    if args.write:
        with open(args.write, "a") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
