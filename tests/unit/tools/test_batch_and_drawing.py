from __future__ import annotations

import json

from PIL import Image

from tests.media_helpers import with_orientation
from vlserve.tools.batch import collect_sources, completed_work, drawn_path
from vlserve.tools.drawing import draw_result


def test_sources_from_folders_lists_and_urls(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/one.JPG", "a/two.png", "a/skip.txt", "three.webp"):
        (tmp_path / name).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# comment\n\nhttps://example.com/x.png\n{tmp_path}/three.webp\n")
    sources = collect_sources([str(tmp_path / "a"), str(listing), "https://example.com/x.png"])
    assert sources == [f"{tmp_path}/a/one.JPG", f"{tmp_path}/a/two.png", "https://example.com/x.png",
                       f"{tmp_path}/three.webp"]


def test_resuming_keeps_what_was_done_and_drops_failures_and_a_torn_line(tmp_path):
    out = tmp_path / "r.jsonl"
    lines = [{"source": "a", "ok": True}, {"source": "b", "ok": False, "error": {"message": "down"}},
             {"source": "c", "ok": True}]
    out.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"source": "d", "o')
    assert completed_work(out) == {"a", "c"}
    assert [json.loads(line)["source"] for line in out.read_text().splitlines()] == ["a", "c"]


def test_drawn_copies_keep_their_paths_so_names_never_collide(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sources = ["a.jpg", "a.png", "sub1/x.jpg", "sub2/x.jpg", "/elsewhere/a.jpg"]
    drawn = [drawn_path(tmp_path / "drawn", source) for source in sources]
    assert len(set(drawn)) == len(sources)
    assert drawn[2] == tmp_path / "drawn" / "sub1" / "x.jpg.png"
    assert drawn[4] == tmp_path / "drawn" / "elsewhere" / "a.jpg.png"


def test_labels_have_a_backing_that_contrasts(tmp_path):
    source = tmp_path / "same.png"
    Image.new("RGB", (400, 300), (230, 25, 75)).save(source)  # the first box colour all over
    drawn = draw_result(source, {"objects": [{"label": "cat", "box": [50, 50, 350, 250]}]}, tmp_path / "o.png")
    img = Image.open(drawn)
    label_area = img.crop((52, 52, 120, 75))
    # White ink on the red backing: near-white pixels where the image has none.
    assert any(min(color) > 230 for _, color in label_area.getcolors(1 << 16))


def test_boxes_are_drawn_on_the_upright_image(tmp_path):
    source = tmp_path / "rotated.jpg"
    source.write_bytes(with_orientation(Image.new("RGB", (200, 100), (255, 255, 255)), 6))
    drawn = draw_result(source, {"objects": [{"label": "thing", "box": [10, 20, 90, 180]}]}, tmp_path / "o.png")
    img = Image.open(drawn)
    assert img.size == (100, 200)  # upright, as the coordinates are
    assert img.getpixel((10, 100))[1] < 200 and img.getpixel((50, 100)) == (255, 255, 255)


def test_an_output_file_that_is_not_ours_is_never_rewritten(tmp_path):
    import pytest

    from vlserve.tools.batch import NotOurFile

    out = tmp_path / "data.jsonl"
    out.write_text('{"id": 1}\n{"id": 2}\n')
    with pytest.raises(NotOurFile):
        completed_work(out)
    assert out.read_text() == '{"id": 1}\n{"id": 2}\n'
    done = tmp_path / "done.jsonl"
    done.write_text('{"source": "a", "ok": true}\n')
    before = done.stat().st_mtime_ns
    assert completed_work(done) == {"a"} and done.stat().st_mtime_ns == before  # nothing to drop: untouched


def test_a_folder_input_skips_the_drawn_copies(tmp_path):
    (tmp_path / "drawn").mkdir()
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "drawn" / "a.png.png").write_bytes(b"x")
    assert collect_sources([str(tmp_path)], skip=tmp_path / "drawn") == [str(tmp_path / "a.png")]
