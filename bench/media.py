"""Benchmark: per-image normalisation time and bytes forwarded, downscaling on vs off.

    python bench/media.py [--runs 7] [--write bench/RESULTS.md]

Images are generated (no downloads): a 12 MP photo-like JPEG, a 4K screenshot-like PNG
and a small JPEG. Each is normalised as the gateway does for a request (decode, check,
orient, resize, encode) with MEDIA_DOWNSCALE on and off, in one process, side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import os
import platform
import statistics
import sys
import time

from PIL import Image, ImageDraw, ImageFont

from vlserve.config import Settings
from vlserve.media import MediaNormalizer, MediaPolicy, smart_resize


def photo(size=(4000, 3000)) -> bytes:
    """Smooth gradients plus sensor-like noise: compresses like a phone photo."""
    base = Image.merge("RGB", [Image.linear_gradient("L").resize(size),
                               Image.radial_gradient("L").resize(size),
                               Image.linear_gradient("L").rotate(90).resize(size)])
    noise = Image.effect_noise(size, 24).convert("RGB")
    img = Image.blend(base, noise, 0.15)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=88)
    return buf.getvalue()


def screenshot(size=(3840, 2160)) -> bytes:
    """A UI capture: anti-aliased text on flat panels, plus a photo in one corner."""
    img = Image.new("RGB", size, (245, 245, 245))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=22)
    words = "invoice total amount due date customer reference quantity price tax".split()
    for row, y in enumerate(range(40, size[1] - 40, 30)):
        line = " ".join(words[(row + i) % len(words)] for i in range(40))
        draw.text((60, y), f"{row:04d}  {line}", fill=(30, 30, 30 + row % 90), font=font)
    inset = Image.open(io.BytesIO(photo((1200, 900))))
    img.paste(inset, (size[0] - 1300, 100))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def small_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((640, 480), 40).convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


def measure(data: bytes, downscale: bool, runs: int) -> dict:
    settings = Settings(MEDIA_DOWNSCALE=downscale)
    media = MediaNormalizer(MediaPolicy.from_settings(settings))
    times, image = [], None
    for _ in range(runs):
        started = time.perf_counter()
        image = asyncio.run(media.image_from_bytes(data))
        times.append((time.perf_counter() - started) * 1000)
    if downscale and image.reencoded:  # the promise: exactly the processor's size
        assert (image.sent_height, image.sent_width) == smart_resize(image.height, image.width, media.policy.budget)
    return {"ms": statistics.median(times), "forwarded": len(image.data_url),
            "sent": f"{image.sent_width}x{image.sent_height}",
            "tokens": image.sent_width * image.sent_height // (settings.media_image_factor ** 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--write", help="write the results as Markdown to this file")
    args = parser.parse_args()
    cases = {"12 MP JPEG (4000x3000)": photo(), "4K PNG (3840x2160)": screenshot(),
             "small JPEG (640x480)": small_jpeg()}
    rows = ["| image | input bytes | downscale | median ms | bytes forwarded | sent size | visual tokens* |",
            "|---|---:|---|---:|---:|---|---:|"]
    for name, data in cases.items():
        for downscale in (False, True):
            r = measure(data, downscale, args.runs)
            rows.append(f"| {name} | {len(data):,} | {'on' if downscale else 'off'} | {r['ms']:.1f} | "
                        f"{r['forwarded']:,} | {r['sent']} | {r['tokens']:,} |")
    header = (f"Command: `python bench/media.py --runs {args.runs}`  \n"
              f"Date: {datetime.date.today()}; machine: {platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}, Pillow {Image.__version__}\n\n")
    note = ("\n\n*visual tokens = sent pixels / 32². With downscaling off, the engine's processor "
            "works to its own budget (Qwen3-VL ships ~16.7 MP), so a 12 MP photo costs it ~11,700 "
            "visual tokens unless it is also sent `mm_processor_kwargs`.\n")
    text = header + "\n".join(rows) + note
    print(text)
    if args.write:
        with open(args.write, "w") as fh:
            fh.write("# Benchmarks\n\n## Media normalisation (`bench/media.py`)\n\n" + text)


if __name__ == "__main__":
    sys.exit(main())
