"""Batch analysis from the command line: many images and PDFs → one JSON line each.

- Sources: image and PDF files, folders (recursively, by extension), text files listing
  paths or URLs (one per line), or URLs.
- Work: one request per image, one per page of a PDF (its line has `page`); for a task
  that takes several images (compare), one request with all of them, written as one line.
- Output: JSON Lines, written and flushed one complete line at a time, so an
  interrupted run leaves a valid file. Re-running with the same output resumes: work
  recorded as done is skipped, and work recorded as failed (an outage, a missing key)
  is tried again, its old line replaced, so every image is listed once.
- A failed image becomes an error line; the batch goes on.
"""

from __future__ import annotations

import asyncio
import base64
import json
import mimetypes
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", ".pdf"}
_PAGE = re.compile(r"^(?P<path>.+)#page=(?P<page>\d+)$")  # one page of a PDF, as a piece of work
LIST_EXTENSIONS = {".txt", ".lst", ".urls"}


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def missing_inputs(paths: Iterable[str]) -> list[str]:
    """The command-line inputs that are neither URLs nor existing files or folders."""
    return [raw for raw in paths if not is_url(raw) and not Path(raw).exists()]


def collect_sources(paths: Iterable[str], skip: Path | None = None) -> list[str]:
    """Expand folders and list files into sources, in a stable order, without duplicates.
    Nothing under `skip` (where drawn copies go) is taken from a folder."""
    sources: list[str] = []
    skipped = skip.resolve() if skip is not None else None
    for raw in paths:
        path = Path(raw)
        if is_url(raw):
            sources.append(raw)
        elif path.is_dir():
            sources += sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                              and not (skipped and p.resolve().is_relative_to(skipped)))
        elif path.suffix.lower() in LIST_EXTENSIONS and path.is_file():
            lines = (line.strip() for line in path.read_text().splitlines())
            sources += [line for line in lines if line and not line.startswith("#")]
        else:
            sources.append(raw)  # a listed file that is missing is reported as an error line
    return list(dict.fromkeys(sources))


def work_key(sources: tuple[str, ...]) -> str:
    """What an output line is recorded under (a PDF's page: "a.pdf#page=3")."""
    return " + ".join(sources)


def line_key(record: dict[str, Any]) -> str:
    """The work an output line records: its source, and its page for a PDF's."""
    return f"{record['source']}#page={record['page']}" if record.get("page") else record["source"]


def pdf_pages(source: str) -> list[str]:
    """A local PDF's pages as pieces of work; [source] when it is not one that can be read
    (the service then says why, in its line)."""
    if is_url(source) or Path(source).suffix.lower() != ".pdf":
        return [source]
    try:
        import pypdfium2 as pdfium  # the user's own file, on the user's machine

        document = pdfium.PdfDocument(source)
        count = len(document)
        document.close()
    except Exception:
        return [source]
    return [f"{source}#page={page}" for page in range(1, count + 1)] or [source]


class NotOurFile(Exception):
    """The output file holds lines this command did not write: it is not touched."""


def completed_work(out: Path) -> set[str]:
    """Work already done in `out`. Failed lines are dropped from the file (they will be
    tried again) and a torn last line (a crash mid-write) is cut away. A file with a
    whole line that is not one of ours is refused (NotOurFile), never rewritten."""
    if not out.exists():
        return set()
    kept, done, changed = [], set(), False
    lines = out.read_bytes().decode("utf-8", "replace").splitlines(keepends=True)
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        ours = isinstance(record, dict) and isinstance(record.get("source"), str) and "ok" in record
        if not ours and (line.endswith("\n") or number < len(lines)) and line.strip():
            raise NotOurFile(f"{out} line {number} is not a result line of vlserve analyze; choose another --out")
        if ours and record["ok"] and line.endswith("\n"):
            kept.append(line)
            done.add(line_key(record))
        else:
            changed = True
    if not changed:
        return done
    partial = out.with_name(out.name + ".partial")
    partial.write_text("".join(kept), encoding="utf-8")
    os.replace(partial, out)  # atomic: an interruption leaves the old file or the new one
    return done


@dataclass
class BatchJob:
    server: str
    task: str
    fields: dict[str, Any] = field(default_factory=dict)
    api_key: str | None = None
    concurrency: int = 4
    timeout_s: float = 300.0
    together: bool = False  # the task takes all the images in one request (compare)

    def work(self, sources: list[str]) -> list[tuple[str, ...]]:
        if self.together:
            return [tuple(sources)]
        return [(piece,) for source in sources for piece in pdf_pages(source)]


def _reference(source: str) -> str:
    """A URL as it is; a file as a data URL."""
    if is_url(source):
        return source
    mime = mimetypes.guess_type(source)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(Path(source).read_bytes()).decode("ascii")


async def _request(client: httpx.AsyncClient, job: BatchJob, sources: tuple[str, ...]) -> httpx.Response:
    if job.together or is_url(sources[0]):
        images = await asyncio.to_thread(lambda: [_reference(source) for source in sources])
        image_fields = {"images": images} if job.together else {"image": images[0]}
        return await client.post("/analyze", json={"task": job.task, **image_fields, **job.fields})
    source, page = _page_of(sources[0])
    data = await asyncio.to_thread(Path(source).read_bytes)
    mime = mimetypes.guess_type(source)[0] or "application/octet-stream"
    form = {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in job.fields.items()}
    if isinstance(job.fields.get("objects"), list):
        form["objects"] = ",".join(job.fields["objects"])
    if page is not None:
        form["pages"] = str(page)
    return await client.post("/analyze/upload", data={"task": job.task, **form},
                             files={"image": (Path(source).name, data, mime)})


def _page_of(piece: str) -> tuple[str, int | None]:
    """A local PDF's page as work ("a.pdf#page=3"); a URL is never one (its fragment is its own)."""
    match = None if is_url(piece) else _PAGE.match(piece)
    return (match["path"], int(match["page"])) if match else (piece, None)


def _one_page(body: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """A PDF page's answer as its own line: the page's result, or its error."""
    page = (body.get("pages") or [{}])[0]
    if page.get("error"):
        return False, {"error": page["error"]}
    return True, {**{k: v for k, v in body.items() if k not in ("pages", "pages_failed")},
                  "result": page.get("result"), "text": page.get("text"), "image": page.get("image"),
                  "usage": page.get("usage")}


async def analyze_one(client: httpx.AsyncClient, job: BatchJob, sources: tuple[str, ...]) -> dict[str, Any]:
    """One piece of work → its output line (as a dict). Never raises for a bad image."""
    path, page = _page_of(sources[0])
    line: dict[str, Any] = {"source": path if page else work_key(sources)}
    if page:
        line["page"] = page
    if job.together:
        line["sources"] = list(sources)
    try:
        resp = await _request(client, job, sources)
    except FileNotFoundError as exc:
        return {**line, "ok": False, "error": {"message": f"no such file: {exc.filename}", "code": "no_such_file"}}
    except (OSError, httpx.HTTPError) as exc:
        return {**line, "ok": False, "error": {"message": f"{type(exc).__name__}: {exc}",
                                               "code": "connection_error"}}
    try:
        body = resp.json()
    except ValueError:
        body = {"error": {"message": resp.text[:500]}}
    if resp.status_code != 200:
        return {**line, "ok": False, "status": resp.status_code, "error": body.get("error", body)}
    if page is not None:
        ok, fields = _one_page(body)
        return {**line, "ok": ok, **fields}
    return {**line, "ok": True, **body}


def failure_reason(line: dict[str, Any]) -> str:
    """A short reason to group failures by: the HTTP status and error code."""
    error = line.get("error") or {}
    code = error.get("code") if isinstance(error, dict) else None
    status = line.get("status")
    return " ".join(str(part) for part in (f"HTTP {status}" if status else None, code) if part) or "error"


def summarize_failures(lines: list[dict[str, Any]]) -> list[str]:
    """'N × reason: an example message' per reason, most frequent first."""
    by_reason = Counter(failure_reason(line) for line in lines)
    examples = {failure_reason(line): (line.get("error") or {}).get("message", "") for line in lines}
    return [f"{count} × {reason}: {str(examples[reason])[:160]}" for reason, count in by_reason.most_common()]


async def run_batch(job: BatchJob, sources: list[str], out: Path,
                    on_result: Callable[[dict[str, Any]], None] = lambda line: None) -> int:
    """Run the work of `sources` not yet done in `out`, appending a line each. Returns how many ran."""
    done = completed_work(out)
    todo = [work for work in job.work(sources) if work_key(work) not in done]
    headers = {"Authorization": f"Bearer {job.api_key}"} if job.api_key else {}
    limit = asyncio.Semaphore(job.concurrency)

    async def bounded(client: httpx.AsyncClient, work: tuple[str, ...]) -> dict[str, Any]:
        async with limit:
            return await analyze_one(client, job, work)

    async with httpx.AsyncClient(base_url=job.server.rstrip("/"), headers=headers, timeout=job.timeout_s) as client:
        tasks = [asyncio.ensure_future(bounded(client, work)) for work in todo]
        try:
            with out.open("a", encoding="utf-8") as sink:
                for finished in asyncio.as_completed(tasks):
                    line = await finished
                    sink.write(json.dumps(line, ensure_ascii=False) + "\n")
                    sink.flush()
                    on_result(line)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return len(todo)


def write_markdown(out: Path, markdown_dir: Path, task_format: str = "markdown") -> list[Path]:
    """One file per PDF whose pages are in `out` (task document): its pages' results in
    page order, with page markers, under `markdown_dir` at the PDF's path + ".md"."""
    pages: dict[str, dict[int, str]] = {}
    for raw in out.read_text(encoding="utf-8").splitlines():
        record = json.loads(raw)
        result = record.get("result")
        if record.get("ok") and record.get("page") and isinstance(result, dict) and task_format in result:
            pages.setdefault(record["source"], {})[record["page"]] = str(result[task_format])
    written = []
    for source, texts in pages.items():
        target = drawn_path(markdown_dir, source).with_suffix(".md")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("\n\n".join(f"<!-- page {n} -->\n{texts[n]}" for n in sorted(texts)) + "\n",
                          encoding="utf-8")
        written.append(target)
    return written


def drawn_path(draw_dir: Path, source: str) -> Path:
    """Where the drawn copy of `source` goes: its path (relative to the working folder
    when it is inside it) kept under `draw_dir`, with `.png` added to the whole name, so
    `a.jpg` and `a.png`, or `x/a.jpg` and `y/a.jpg`, never write the same file."""
    path = Path(source).resolve()
    try:
        relative = path.relative_to(Path.cwd().resolve())
    except ValueError:
        relative = path.relative_to(path.anchor)
    return draw_dir / relative.parent / (relative.name + ".png")
