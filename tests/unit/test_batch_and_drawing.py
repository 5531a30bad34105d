from __future__ import annotations

import json

from PIL import Image

from vlserve.batch import collect_sources, recorded_sources
from vlserve.drawing import draw_result

from .test_media_images import with_orientation


def test_sources_from_folders_lists_and_urls(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/one.JPG", "a/two.png", "a/skip.txt", "three.webp"):
        (tmp_path / name).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# comment\n\nhttps://example.com/x.png\n{tmp_path}/three.webp\n")
    sources = collect_sources([str(tmp_path / "a"), str(listing), "https://example.com/x.png"])
    assert sources == [f"{tmp_path}/a/one.JPG", f"{tmp_path}/a/two.png", "https://example.com/x.png",
                       f"{tmp_path}/three.webp"]


def test_a_torn_last_line_is_cut_before_resuming(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text(json.dumps({"source": "a", "ok": True}) + "\n" + '{"source": "b", "o')
    assert recorded_sources(out) == {"a"}
    assert out.read_text().endswith("}\n")


def test_boxes_are_drawn_on_the_upright_image(tmp_path):
    source = tmp_path / "rotated.jpg"
    source.write_bytes(with_orientation(Image.new("RGB", (200, 100), (255, 255, 255)), 6))
    drawn = draw_result(source, {"objects": [{"label": "thing", "box": [10, 20, 90, 180]}]}, tmp_path / "o.png")
    img = Image.open(drawn)
    assert img.size == (100, 200)  # upright, as the coordinates are
    assert img.getpixel((10, 100))[1] < 200 and img.getpixel((50, 100)) == (255, 255, 255)
