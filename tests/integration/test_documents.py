"""PDFs wherever an image goes: a chat's OpenAI `file` part and the Responses API's
`input_file` reach the engine as one image per page, through a real gateway process and
the openai SDK; what is not a PDF is refused, never dropped."""

from __future__ import annotations

import base64

import httpx
import openai
import pytest

from ..media_helpers import pdf, png
from ..scripted_upstream import ScriptedUpstream
from ..servers import ServerProcess

THREE_PAGES = pdf([(612, 792), (842, 595), (612, 792)])


def data_url(data: bytes, mime: str = "application/pdf") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def engine():
    return ScriptedUpstream("Read it.").start()


@pytest.fixture(scope="module")
def gateway(engine, tmp_path_factory):
    logs = tmp_path_factory.mktemp("documents")
    server = ServerProcess({"UPSTREAM_BASE_URL": engine.url, "MEDIA_MAX_IMAGES": "4"}, logs, "documents").start()
    try:
        yield server.wait_healthy()
    finally:
        server.stop()


def images_sent(engine: ScriptedUpstream) -> list[str]:
    content = engine.requests[-1]["messages"][-1]["content"]
    return [part["image_url"]["url"] for part in content if part["type"] == "image_url"]


def test_a_pdf_file_part_reaches_the_engine_as_its_pages(engine, gateway):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none", max_retries=0)
    answer = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": [
        {"type": "file", "file": {"file_data": data_url(THREE_PAGES), "filename": "report.pdf"}},
        {"type": "text", "text": "Summarise the report."}]}])
    assert answer.choices[0].message.content == "Read it."
    sent = images_sent(engine)
    assert len(sent) == 3 and all(url.startswith("data:image/jpeg;base64,") for url in sent)
    assert engine.requests[-1]["messages"][-1]["content"][-1] == {"type": "text", "text": "Summarise the report."}


def test_the_responses_api_input_file_too(engine, gateway):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none", max_retries=0)
    response = client.responses.create(model="scripted", input=[{"role": "user", "content": [
        {"type": "input_file", "filename": "report.pdf", "file_data": data_url(THREE_PAGES)},
        {"type": "input_text", "text": "What is on page 2?"}]}])
    assert response.output_text == "Read it."
    assert len(images_sent(engine)) == 3


@pytest.mark.parametrize("file, status, words", [
    ({"file_data": data_url(png(), "image/png")}, 415, "is not a PDF"),
    ({"file_data": data_url(b"%PDF-1.7 but nothing else")}, 400, "not a PDF that can be read"),
    ({"file_id": "file-abc123"}, 400, "no Files API"),
    ({"file_data": data_url(pdf([(100, 100)] * 5))}, 413, "MEDIA_MAX_IMAGES"),
    ({"file_data": data_url(pdf(password="x"))}, 400, "encrypted"),
])
def test_a_file_part_that_cannot_be_read_is_refused_not_dropped(gateway, file, status, words):
    resp = httpx.post(f"{gateway.url}/v1/chat/completions", timeout=60, json={
        "model": "scripted", "messages": [{"role": "user", "content": [{"type": "file", "file": file},
                                                                        {"type": "text", "text": "?"}]}]})
    assert resp.status_code == status, resp.text
    assert words in resp.json()["error"]["message"]


def analyze(gateway, **body) -> httpx.Response:
    return httpx.post(f"{gateway.url}/analyze", timeout=120, json=body)


def test_analyze_reads_a_pdf_page_by_page_and_merges_the_document(engine, gateway):
    before = len(engine.requests)
    resp = analyze(gateway, task="document", image=base64.b64encode(THREE_PAGES).decode())
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert [page["page"] for page in answer["pages"]] == [1, 2, 3] and answer["pages_failed"] == 0
    assert len(engine.requests) - before == 3  # one engine call per page
    for page in answer["pages"]:
        assert page["result"] == {"markdown": "Read it."}
        assert page["image"]["width"] * page["image"]["height"] <= 1280 * 32 * 32  # at the budget
    assert answer["pages"][1]["image"]["width"] > answer["pages"][1]["image"]["height"]  # the landscape page
    assert answer["result"]["markdown"] == ("<!-- page 1 -->\nRead it.\n\n<!-- page 2 -->\nRead it.\n\n"
                                            "<!-- page 3 -->\nRead it.")
    assert answer["usage"]["prompt_tokens"] == sum(page["usage"]["prompt_tokens"] for page in answer["pages"])


def test_analyze_takes_page_ranges_and_uploads(gateway):
    resp = analyze(gateway, task="caption", image=data_url(THREE_PAGES), pages="3,1")
    assert [page["page"] for page in resp.json()["pages"]] == [3, 1]
    assert len(resp.json()["result"]) == 2  # tasks without a merge: the pages' results in order
    upload = httpx.post(f"{gateway.url}/analyze/upload", timeout=120, data={"task": "ocr", "pages": "2"},
                        files={"image": ("report.pdf", THREE_PAGES, "application/pdf")})
    assert upload.status_code == 200, upload.text
    assert upload.json()["result"] == {"text": "<!-- page 2 -->\nRead it."}
    image = analyze(gateway, task="caption", image=base64.b64encode(png((64, 64))).decode(), pages="1")
    assert image.status_code == 400 and image.json()["error"]["param"] == "pages"


def test_pages_that_fail_are_retried_once_and_a_document_of_failures_is_an_error(engine, gateway):
    """The scripted engine's answer is not JSON: every page's extraction fails validation."""
    before = len(engine.requests)
    resp = analyze(gateway, task="extract", image=data_url(THREE_PAGES), pages="1-2",
                   schema={"type": "object", "properties": {"total": {"type": "number"}}, "required": ["total"]})
    assert resp.status_code == 422, resp.text  # no page was read: the first page's error, not a 200
    assert "schema" in resp.json()["error"]["message"]
    # each page: an answer and its repair turn, twice (one retry)
    assert len(engine.requests) - before == 2 * 2 * 2


def test_the_batch_cli_reads_pdfs_page_by_page_resumes_per_page_and_writes_markdown(engine, gateway, tmp_path):
    import json
    import subprocess
    import sys

    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "report.pdf").write_bytes(THREE_PAGES)
    (folder / "sub" / "letter.pdf").write_bytes(pdf([(612, 792)] * 2))
    (folder / "photo.png").write_bytes(png((64, 48)))
    out, markdown = tmp_path / "results.jsonl", tmp_path / "md"
    command = [sys.executable, "-m", "vlserve.cli", "analyze", str(folder), "--task", "document", "--out", str(out),
               "--markdown-dir", str(markdown), "--server", gateway.url]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    pages = sorted((line["source"].rsplit("/", 1)[-1], line.get("page")) for line in lines)
    assert pages == [("letter.pdf", 1), ("letter.pdf", 2), ("photo.png", None), ("report.pdf", 1),
                     ("report.pdf", 2), ("report.pdf", 3)]
    assert all(line["ok"] and line["result"] == {"markdown": "Read it."} for line in lines)
    report = (markdown / "docs" / "report.pdf.md").read_text()
    assert report == "<!-- page 1 -->\nRead it.\n\n<!-- page 2 -->\nRead it.\n\n<!-- page 3 -->\nRead it.\n"
    assert (markdown / "docs" / "sub" / "letter.pdf.md").exists()
    before = len(engine.requests)
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0 and "6 already done" in again.stderr
    assert len(engine.requests) == before  # every page was done: nothing sent again


def test_a_streamed_pdf_sends_each_page_as_it_is_done(gateway):
    import json

    with httpx.stream("POST", f"{gateway.url}/analyze", timeout=120, json={
            "task": "document", "image": data_url(THREE_PAGES), "stream": True}) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    pages, final = [json.loads(e) for e in events[:-2]], json.loads(events[-2])
    assert sorted(page["page"] for page in pages) == [1, 2, 3]
    assert all(page["result"] == {"markdown": "Read it."} for page in pages)
    assert final["pages_failed"] == 0 and final["result"]["markdown"].count("<!-- page") == 3
    image = analyze(gateway, task="caption", image=base64.b64encode(png((64, 64))).decode(), stream=True)
    assert image.status_code == 400 and image.json()["error"]["param"] == "stream"


def test_pages_shows_a_pdf_as_small_page_images(gateway):
    resp = httpx.post(f"{gateway.url}/pages", timeout=60, json={"file": data_url(THREE_PAGES)})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["count"] == 3 and [p["page"] for p in body["pages"]] == [1, 2, 3]
    assert all(p["width"] * p["height"] <= 256 * 256 and p["image"].startswith("data:image/jpeg") for p in body["pages"])
    assert httpx.post(f"{gateway.url}/pages", json={"file": data_url(png(), "image/png")}).status_code == 415


def test_a_client_that_leaves_cancels_the_pages_still_to_come(tmp_path):
    """Six pages, two in flight, held at the engine; the client hangs up: no other page is sent."""
    import socket

    from ..waiting import eventually

    held = ScriptedUpstream("Read it.").start()
    held.hold_whole = True
    server = ServerProcess({"UPSTREAM_BASE_URL": held.url, "MEDIA_PDF_PAGES_IN_FLIGHT": "2"}, tmp_path,
                           "leaving").start()
    try:
        server.wait_healthy()
        body = ('{"task": "caption", "image": "' + base64.b64encode(pdf([(300, 300)] * 6)).decode() + '"}').encode()
        client = socket.create_connection(("127.0.0.1", server.port))
        client.sendall(b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert eventually(lambda: len(held.requests) == 2)  # two pages at the engine, four waiting
        client.close()
        assert eventually(lambda: '"status": 499' in server.logs())
        httpx.post(f"{held.url}/stand-in/release")
        assert httpx.post(f"{server.url}/v1/chat/completions", timeout=30, json={
            "model": "scripted", "messages": [{"role": "user", "content": "still there?"}]}).status_code == 200
        assert len(held.requests) == 3  # the two held pages and the chat: no page after the client left
    finally:
        server.stop()
