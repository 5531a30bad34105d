"""`vlserve analyze`: many images and PDFs through a running service, one JSON line each
(one per page of a PDF)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from vlserve.analysis import describe_tasks
from vlserve.analysis.tasks import TASKS
from vlserve.cli.common import KeyOption, ServerOption, app, fail


@app.command()
def analyze(
    paths: Annotated[list[str], typer.Argument(help="Image and PDF files, folders, text files of paths/URLs, "
                                               "or URLs")],
    task: Annotated[str, typer.Option(help=f"One of: {describe_tasks()}")] = "caption",
    out: Annotated[Path, typer.Option(help="JSON Lines output; re-running with it resumes (failed images are "
                                      "tried again)")] = Path("results.jsonl"),
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Requests in flight")] = 4,
    question: Annotated[str | None, typer.Option(help="For qa and compare")] = None,
    objects: Annotated[str | None, typer.Option(help="Comma-separated, for detect and point")] = None,
    boxes: Annotated[bool, typer.Option(help="ocr: lines with boxes")] = False,
    schema: Annotated[Path | None, typer.Option(help="extract: a JSON Schema file")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens per answer")] = None,
    draw: Annotated[Path | None, typer.Option(help="Write copies of the images with results drawn here")] = None,
    markdown_dir: Annotated[Path | None, typer.Option(help="task document: write one .md per PDF here (its pages "
                                                      "in order)")] = None,
    server: ServerOption = None,
    api_key: KeyOption = None,
) -> None:
    """Analyse many images and PDFs with a running service, one JSON line per image or PDF page
    (compare: one line for all)."""
    import asyncio

    from vlserve.tools.batch import BatchJob, NotOurFile, completed_work, run_batch, summarize_failures
    from vlserve.tools.client import default_server

    server = server or default_server()
    fields = _analyze_fields(task, question, objects, boxes, schema, max_tokens)
    _check_outputs(out, draw)
    if markdown_dir is not None and task != "document":
        raise fail("analyze", "--markdown-dir needs --task document", code=2)
    sources = _analyze_sources(task, paths, draw)
    job = BatchJob(server=server, task=task, fields=fields, api_key=api_key, concurrency=concurrency,
                   together=TASKS[task].several_images)
    work = job.work(sources)
    with BatchProgress(job, task, len(work), draw) as progress:
        try:
            already = len(completed_work(out) & {" + ".join(w) for w in work})
        except NotOurFile as exc:
            progress.stop()
            raise fail("analyze", exc, code=2) from None
        progress.resumed(already)
        try:
            ran = asyncio.run(run_batch(job, sources, out, progress.record))
        except KeyboardInterrupt:
            progress.stop()
            typer.echo(f"interrupted: {progress.ran - already} done this run, {len(progress.failures)} failed; "
                       f"results so far are in {out}; run the same command again to resume", err=True)
            raise typer.Exit(130) from None
    failures = progress.failures
    if markdown_dir is not None:
        from vlserve.tools.batch import write_markdown

        written = write_markdown(out, markdown_dir)
        typer.echo(f"{len(written)} Markdown file(s) written under {markdown_dir}", err=True)
    typer.echo(f"{ran} analysed ({ran - len(failures)} ok, {len(failures)} failed), {already} already done "
               f"in {out}", err=True)
    if failures:
        typer.echo("failures by reason:\n  " + "\n  ".join(summarize_failures(failures)), err=True)
        typer.echo(f"run the same command again to retry the {len(failures)} failed", err=True)
        raise typer.Exit(1)


class BatchProgress:
    """The progress bar of a batch, and what each finished line does to it: count it, keep
    its failure, draw its result when asked to."""

    def __init__(self, job: Any, task: str, total: int, draw: Path | None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._job, self._draw = job, draw
        self.failures: list[dict] = []
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}/s"), TimeRemainingColumn(),
                   TextColumn("{task.fields[failed]} failed")]
        self._progress = Progress(*columns, console=Console(stderr=True), transient=False)
        self._bar = self._progress.add_task(task, total=total, rate="-", failed=0)

    def __enter__(self) -> BatchProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def stop(self) -> None:
        self._progress.stop()

    def resumed(self, already: int) -> None:
        self._progress.update(self._bar, completed=already)

    @property
    def ran(self) -> int:
        return int(self._progress.tasks[0].completed)

    def record(self, line: dict) -> None:
        from vlserve.tools.batch import drawn_path, is_url
        from vlserve.tools.drawing import draw_result

        if not line["ok"]:
            self.failures.append(line)
        elif self._draw and not self._job.together and not is_url(line["source"]) and not line.get("page"):
            try:
                draw_result(Path(line["source"]), line.get("result") or {}, drawn_path(self._draw, line["source"]))
            except Exception as exc:  # a drawing is a by-product: the result line is already written
                self._progress.console.print(f"could not draw {line['source']}: {exc}", highlight=False)
        speed = self._progress.tasks[0].speed
        self._progress.update(self._bar, advance=1, failed=len(self.failures), rate=f"{speed:.1f}" if speed else "-")


def _analyze_fields(task: str, question: str | None, objects: str | None, boxes: bool, schema: Path | None,
                    max_tokens: int | None) -> dict[str, Any]:
    """The request fields of a batch, checked against the task before anything is sent."""
    if task not in TASKS:
        raise fail("analyze", f"unknown task {task!r}; tasks are: {', '.join(TASKS)}", code=2)
    spec = TASKS[task]
    if spec.needs_question and not question:
        raise fail("analyze", f"--task {task} needs --question", code=2)
    if spec.needs_schema and schema is None:
        raise fail("analyze", f"--task {task} needs --schema FILE (a JSON Schema)", code=2)
    fields: dict[str, Any] = {k: v for k, v in {"question": question, "max_tokens": max_tokens}.items()
                              if v is not None}
    if objects:
        fields["objects"] = [o.strip() for o in objects.split(",") if o.strip()]
    if boxes:
        fields["boxes"] = True
    if schema is not None:
        try:
            fields["schema"] = json.loads(schema.read_text())
        except OSError as exc:
            raise fail("analyze", f"--schema {schema}: {exc.strerror}", code=2) from None
        except ValueError as exc:
            raise fail("analyze", f"--schema {schema} is not valid JSON: {exc}", code=2) from None
        if not isinstance(fields["schema"], dict):
            raise fail("analyze", f"--schema {schema} must hold a JSON object (a JSON Schema)", code=2)
    return fields


def _check_outputs(out: Path, draw: Path | None) -> None:
    if out.is_dir():
        raise fail("analyze", f"--out {out} is a folder; give a file such as {out / 'results.jsonl'}", code=2)
    if not out.parent.is_dir():
        raise fail("analyze", f"--out {out}: the folder {out.parent} does not exist", code=2)
    if draw is not None and draw.exists() and not draw.is_dir():
        raise fail("analyze", f"--draw {draw} is a file; give a folder for the drawn copies", code=2)


def _analyze_sources(task: str, paths: list[str], draw: Path | None = None) -> list[str]:
    from vlserve.tools.batch import collect_sources, missing_inputs

    missing = missing_inputs(paths)
    if missing:
        raise fail("analyze", f"no such file or folder: {', '.join(missing)}", code=2)
    sources = collect_sources(paths, skip=draw)
    if not sources:
        raise fail("analyze", f"no images or PDFs found in {', '.join(paths)}", code=2)
    if TASKS[task].several_images and len(sources) < 2:
        raise fail("analyze", f"--task {task} compares two or more images; got {len(sources)}", code=2)
    return sources
