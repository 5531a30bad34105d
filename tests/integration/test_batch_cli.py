"""`vlserve analyze`: a batch with a corrupt file, interrupted with Ctrl-C, then resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from PIL import Image

from ..waiting import eventually
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
    # Ctrl-C as a terminal sends it: SIGINT handled by default, even when this test runs in
    # a background job (where the shell makes children ignore SIGINT).
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "120"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert eventually(lambda: out.exists() and len(out.read_text().splitlines()) >= 4, timeout=120)
    # The server is frozen while the batch is interrupted, so the batch cannot finish
    # first however fast the rest of it would have gone.
    server = local_server._proc.pid
    os.kill(server, signal.SIGSTOP)
    try:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        os.kill(server, signal.SIGCONT)
    assert proc.returncode == 130, stderr
    assert "resume" in stderr
    first = read_lines(out)
    assert 4 <= len(first) < 21  # stopped part-way, every line whole

    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 1, resumed.stderr  # the broken image failed (again)
    assert "failures by reason" in resumed.stderr and "broken" not in resumed.stdout
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
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr  # the missing file failed
    assert "1 × no_such_file" in result.stderr
    by_source = {line["source"]: line for line in read_lines(out)}
    assert by_source[f"{image_server}/red.png"]["ok"] and by_source[str(photo)]["ok"]
    assert by_source[f"{tmp_path}/missing.png"]["ok"] is False
    assert (drawn / "photo.png.png").is_file()  # local files get a drawn copy, at their own path


def test_arguments_are_checked_before_anything_is_sent(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes())
    schema = tmp_path / "schema.json"
    schema.write_text("{not json")
    cases = [
        ([str(tmp_path / "nothere.png")], "no such file or folder"),
        ([str(image), "--task", "extract"], "needs --schema"),
        ([str(image), "--task", "extract", "--schema", str(schema)], "not valid JSON"),
        ([str(image), "--task", "qa"], "needs --question"),
        ([str(image), "--task", "colour"], "unknown task 'colour'"),
        ([str(image), "--task", "compare", "--question", "same?"], "two or more images"),
    ]
    for args, message in cases:
        # The server is not running: the arguments are refused before any request.
        result = subprocess.run([sys.executable, "-m", "vlserve.cli", "analyze", *args, "--server",
                                 "http://127.0.0.1:9", "--out", str(tmp_path / "o.jsonl")],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert not (tmp_path / "o.jsonl").exists()


def test_a_failed_run_is_retried_on_resume(local_server, tmp_path):
    folder = tmp_path / "photos"
    make_images(folder, count=4)
    (folder / "broken.jpg").unlink()
    out = tmp_path / "out.jsonl"
    down = subprocess.run(analyze_cmd(type("S", (), {"url": "http://127.0.0.1:9"}), str(folder), "--out", str(out),
                                      "--max-tokens", "4"), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert down.returncode == 1
    assert "4 × connection_error" in down.stderr and "retry" in down.stderr
    assert [line["ok"] for line in read_lines(out)] == [False] * 4

    resumed = subprocess.run(analyze_cmd(local_server, str(folder), "--out", str(out), "--max-tokens", "4"),
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    lines = read_lines(out)
    assert len(lines) == 4 and all(line["ok"] for line in lines)  # each image once, now done
    again = subprocess.run(analyze_cmd(local_server, str(folder), "--out", str(out)), cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "0 analysed" in again.stderr and "4 already done" in again.stderr


def test_a_keyed_server_without_a_key_fails_every_image_with_the_reason(secured, tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes())
    out = tmp_path / "out.jsonl"
    result = subprocess.run(analyze_cmd(secured, str(image), "--out", str(out)), cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1 and "1 × HTTP 401 invalid_api_key" in result.stderr


def test_compare_sends_the_images_together(local_server, tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    first.write_bytes(png_bytes((64, 48)))
    second.write_bytes(png_bytes((80, 60), (0, 0, 200)))
    out = tmp_path / "out.jsonl"
    result = subprocess.run(analyze_cmd(local_server, str(first), str(second), "--task", "compare", "--question",
                                        "Are they the same?", "--out", str(out), "--max-tokens", "4"),
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    [line] = read_lines(out)
    assert line["ok"] and line["sources"] == [str(first), str(second)]
    assert [(i["width"], i["height"]) for i in line["images"]] == [(64, 48), (80, 60)]


def test_drawn_copies_of_same_named_images_do_not_overwrite_each_other(local_server, tmp_path):
    for name in ("a.png", "a.jpg", "sub1/x.png", "sub2/x.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (64, 48), (0, 90, 0)).save(tmp_path / name, "PNG" if name.endswith("png") else "JPEG")
    result = subprocess.run([sys.executable, "-m", "vlserve.cli", "analyze", ".", "--task", "detect",
                             "--server", local_server.url, "--draw", "drawn", "--max-tokens", "4"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    drawn = sorted(str(p.relative_to(tmp_path / "drawn")) for p in (tmp_path / "drawn").rglob("*.png"))
    assert drawn == ["a.jpg.png", "a.png.png", "sub1/x.png.png", "sub2/x.png.png"]
