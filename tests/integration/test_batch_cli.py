"""`vlserve analyze`: a batch with a corrupt file, interrupted with Ctrl-C, then resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from .conftest import png_bytes

ROOT = Path(__file__).parents[2]


def make_images(folder: Path, count: int = 20) -> list[str]:
    (folder / "nested").mkdir(parents=True)
    paths = []
    for i in range(count):
        path = folder / ("nested" if i % 3 == 0 else ".") / f"img{i:02d}.png"
        path.write_bytes(png_bytes((40 + i, 30 + i), (i * 10, 100, 200 - i * 5)))
        paths.append(str(path.resolve()).replace(str(folder.resolve()), str(folder)))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "notes.md").write_text("not an image; not picked up from a folder")
    return paths


def analyze_cmd(server, *args: str) -> list[str]:
    return [sys.executable, "-m", "vlserve.cli", "analyze", *args, "--server", server.url]


def read_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_interrupted_batch_resumes_with_every_image_once(local_server, tmp_path):
    folder = tmp_path / "photos"
    make_images(folder)
    out = tmp_path / "results.jsonl"
    command = analyze_cmd(local_server, str(folder), "--task", "caption", "--out", str(out),
                          "--concurrency", "1", "--max-tokens", "48")
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "120"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "resume" in stderr
    first = read_lines(out)
    assert 4 <= len(first) < 21  # stopped part-way, every line whole

    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    lines = read_lines(out)
    sources = [line["source"] for line in lines]
    assert len(sources) == len(set(sources)) == 21  # 20 images + the broken one, each exactly once
    broken = next(line for line in lines if line["source"].endswith("broken.jpg"))
    assert broken["ok"] is False and broken["status"] in (400, 415)
    assert all(line["ok"] and line["task"] == "caption" for line in lines if line is not broken)


def test_url_list_and_drawing(local_server, image_server, tmp_path):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (0, 90, 0)).save(photo)
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# one URL, one file\n{image_server}/red.png\n{photo}\n{tmp_path}/missing.png\n")
    out, drawn = tmp_path / "out.jsonl", tmp_path / "drawn"
    result = subprocess.run(analyze_cmd(local_server, str(listing), "--task", "detect", "--objects", "car,tree",
                                        "--out", str(out), "--draw", str(drawn), "--max-tokens", "8"),
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    by_source = {line["source"]: line for line in read_lines(out)}
    assert by_source[f"{image_server}/red.png"]["ok"] and by_source[str(photo)]["ok"]
    assert by_source[f"{tmp_path}/missing.png"]["ok"] is False
    assert (drawn / "photo.png").is_file()  # local files get a drawn copy
