"""Batch analysis from the command line: many images → one JSON line each.

- Sources: image files, folders (recursively, by image extension), text files listing
  paths or URLs (one per line), or URLs.
- Output: JSON Lines, written and flushed one complete line at a time, so an
  interrupted run leaves a valid file. Re-running with the same output skips every
  source already recorded (success or error): a resumed batch lists each image once.
- A failed image becomes an error line; the batch goes on.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"}
LIST_EXTENSIONS = {".txt", ".lst", ".urls"}


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def collect_sources(paths: Iterable[str]) -> list[str]:
    """Expand folders and list files into sources, in a stable order, without duplicates."""
    sources: list[str] = []
    for raw in paths:
        path = Path(raw)
        if is_url(raw):
            sources.append(raw)
        elif path.is_dir():
            sources += sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        elif path.suffix.lower() in LIST_EXTENSIONS and path.is_file():
            lines = (line.strip() for line in path.read_text().splitlines())
            sources += [line for line in lines if line and not line.startswith("#")]
        else:
            sources.append(raw)  # a missing file is reported as an error line, not a crash
    return list(dict.fromkeys(sources))


def recorded_sources(out: Path) -> set[str]:
    """Sources already in `out`; a torn last line (a crash mid-write) is cut away first."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        out.write_bytes(data)
    done = set()
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            done.add(json.loads(line)["source"])
        except (ValueError, KeyError, TypeError):
            continue
    return done


@dataclass
class BatchJob:
    server: str
    task: str
    fields: dict[str, Any] = field(default_factory=dict)
    api_key: str | None = None
    concurrency: int = 4
    timeout_s: float = 300.0


async def analyze_one(client: httpx.AsyncClient, job: BatchJob, source: str) -> dict[str, Any]:
    """One source → its output line (as a dict). Never raises for a bad image."""
    try:
        if is_url(source):
            resp = await client.post("/analyze", json={"task": job.task, "image": source, **job.fields})
        else:
            data = await asyncio.to_thread(Path(source).read_bytes)
            mime = mimetypes.guess_type(source)[0] or "application/octet-stream"
            form = {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in job.fields.items()}
            if isinstance(job.fields.get("objects"), list):
                form["objects"] = ",".join(job.fields["objects"])
            resp = await client.post("/analyze/upload", data={"task": job.task, **form},
                                     files={"image": (Path(source).name, data, mime)})
    except (OSError, httpx.HTTPError) as exc:
        return {"source": source, "ok": False, "error": {"message": f"{type(exc).__name__}: {exc}"}}
    try:
        body = resp.json()
    except ValueError:
        body = {"error": {"message": resp.text[:500]}}
    if resp.status_code != 200:
        return {"source": source, "ok": False, "status": resp.status_code, "error": body.get("error", body)}
    return {"source": source, "ok": True, **body}


async def run_batch(job: BatchJob, sources: list[str], out: Path,
                    on_result: Callable[[dict[str, Any]], None] = lambda line: None) -> int:
    """Analyse `sources` not yet in `out`, appending a line per source. Returns how many ran."""
    todo = [s for s in sources if s not in recorded_sources(out)]
    headers = {"Authorization": f"Bearer {job.api_key}"} if job.api_key else {}
    limit = asyncio.Semaphore(job.concurrency)

    async def bounded(client: httpx.AsyncClient, source: str) -> dict[str, Any]:
        async with limit:
            return await analyze_one(client, job, source)

    async with httpx.AsyncClient(base_url=job.server.rstrip("/"), headers=headers, timeout=job.timeout_s) as client:
        tasks = [asyncio.ensure_future(bounded(client, s)) for s in todo]
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
