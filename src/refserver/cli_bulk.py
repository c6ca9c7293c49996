"""CLI: ``bulk import``, ``watch``, ``zotero import``, ``export``, ``metadata import``."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

console = Console(stderr=True)
bulk_app = typer.Typer(help="Bulk work: import many PDFs in parallel.", no_args_is_help=True)
zotero_app = typer.Typer(help="Zotero interoperability.", no_args_is_help=True)
metadata_app = typer.Typer(help="Bibliographic metadata files.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(bulk_app, name="bulk")
    app.add_typer(zotero_app, name="zotero")
    app.add_typer(metadata_app, name="metadata")
    app.command("watch")(watch)
    app.command("export")(export)


def _open_ctx(with_vectors: bool = True) -> Any:
    from refserver.cli import open_ctx

    return open_ctx(with_vectors=with_vectors)


class _Bar:
    """A Rich bar fed by the bulk engine's progress snapshots (files/s, pages/s, ETA)."""

    def __init__(self, label: str) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rates]}"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            console=console,
            transient=False,
        )
        self.label = label
        self.task: TaskID | None = None

    def __enter__(self) -> _Bar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, p: Any) -> None:
        if self.task is None:
            self.task = self.progress.add_task(
                self.label, total=p.files_total, rates="", eta="--:--"
            )
        eta = "--:--" if p.eta_seconds is None else _hms(p.eta_seconds)
        self.progress.update(
            self.task,
            completed=p.files_done,
            total=p.files_total,
            rates=f"{p.files_per_s:.2f} files/s · {p.pages_per_s:.1f} pages/s · {p.failed} failed",
            eta=eta,
        )


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


@contextmanager
def _graceful() -> Iterator[threading.Event]:
    """First Ctrl-C/SIGTERM asks the import to stop cleanly (resumable); a second one aborts."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        console.print("[yellow]stopping after files in progress; rerun to resume[/yellow]")

    old_int = signal.signal(signal.SIGINT, handler)
    old_term = signal.signal(signal.SIGTERM, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _summary(rep: Any) -> None:
    table = Table(title=f"Import summary — batch {rep.batch_id}")
    for col in ("imported", "probable duplicates", "already stored", "failed", "pages", "seconds", "files/s", "pages/s"):  # fmt: skip
        table.add_column(col)
    s = rep.summary()
    table.add_row(
        str(s["imported"]),
        str(s["duplicates"]),
        str(s["already_stored"]),
        str(s["failed"]),
        str(rep.pages),
        f"{rep.seconds:.1f}",
        f"{rep.files_per_s:.2f}",
        f"{rep.pages_per_s:.1f}",
    )
    console.print(table)
    for o in rep.duplicates:
        console.print(f"[yellow]duplicate[/yellow] {o.file}: {o.reason} of {o.duplicate_of}")
    for o in rep.failed:
        console.print(f"[red]failed[/red] {o.file}: {o.reason}")
    if rep.cancelled:
        console.print("[yellow]stopped early: run the same command again to resume[/yellow]")


@bulk_app.command("import")
def bulk_import_cmd(
    paths: Annotated[list[Path], typer.Argument(help="PDF files or folders (recursive).")],
    workers: Annotated[
        int | None, typer.Option(help="Extraction processes (default: CPU count; 0 = none).")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write a JSON report here.")] = None,
    ocr: Annotated[bool, typer.Option(help="OCR pages without a usable text layer.")] = True,
    batch_id: Annotated[
        str | None, typer.Option(help="Resume or name a batch (default: from the paths).")
    ] = None,
    retry_failed: Annotated[bool, typer.Option(help="Try files that failed before.")] = False,
) -> None:
    """Import many PDFs at full speed; interrupt any time and rerun to resume."""
    from refserver.ingest.bulk import bulk_import

    ctx = _open_ctx()
    try:
        with _graceful() as stop, _Bar("importing") as bar:
            rep = bulk_import(
                ctx,
                paths,
                workers=workers,
                report=report,
                progress_cb=bar,
                should_cancel=stop.is_set,
                batch_id=batch_id,
                ocr=ocr,
                retry_failed=retry_failed,
            )
    finally:
        ctx.close()
    _summary(rep)
    if rep.failed and not (rep.imported or rep.duplicates or rep.already_stored):
        raise typer.Exit(1)


def watch(
    folder: Annotated[
        Path | None, typer.Option(help="Consume folder (default: <data_dir>/consume).")
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between polls.")] = 5.0,
    once: Annotated[bool, typer.Option("--once", help="Poll twice (to settle) and exit.")] = False,
) -> None:
    """Import PDFs dropped into the consume folder, then file them under done/ or failed/."""
    import time

    from refserver.ingest.watch import ConsumeFolder

    ctx = _open_ctx()
    watcher = ConsumeFolder(ctx, folder, interval=interval)
    console.print(f"watching {watcher.folder} every {interval:g}s (Ctrl-C to stop)")
    try:
        if once:
            for _ in range(watcher.stable_polls):
                for f in watcher.poll_once():
                    _print_filed(f)
                time.sleep(min(interval, 1.0))
            return
        seen = 0
        watcher.start()
        while True:
            time.sleep(0.5)
            for f in watcher.processed[seen:]:
                _print_filed(f)
            seen = len(watcher.processed)
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        watcher.stop()
        ctx.close()


def _print_filed(f: dict[str, Any]) -> None:
    colour = "green" if f["outcome"] == "done" else "red"
    extra = f": {f['reason']}" if f.get("reason") else ""
    console.print(f"[{colour}]{f['outcome']}[/{colour}] {f['file']}{extra}")


@zotero_app.command("import")
def zotero_import_cmd(
    zotero_dir: Annotated[Path, typer.Argument(help="Zotero data folder (has zotero.sqlite).")],
    workers: Annotated[int | None, typer.Option(help="Extraction processes.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write a JSON report here.")] = None,
) -> None:
    """Import Zotero items with their PDFs; Zotero's metadata wins (source: zotero)."""
    from refserver.interop.zotero import zotero_import

    if not (zotero_dir / "zotero.sqlite").is_file():
        console.print(f"[red]no zotero.sqlite in {zotero_dir}[/red]")
        raise typer.Exit(2)
    ctx = _open_ctx()
    try:
        with _graceful() as stop, _Bar("zotero") as bar:
            rep = zotero_import(
                ctx,
                zotero_dir,
                workers=workers,
                progress_cb=bar,
                should_cancel=stop.is_set,
                report=report,
            )
    finally:
        ctx.close()
    console.print(
        f"{rep.items} items, {rep.with_pdf} with a PDF, {len(rep.without_pdf)} without, "
        f"{len(rep.missing_files)} missing attachment files, "
        f"{len(rep.updated_existing)} stored papers updated"
    )
    if rep.bulk is not None:
        _summary(rep.bulk)


def export(
    format: Annotated[
        str, typer.Option("--format", "-f", help="bibtex, ris or csljson")
    ] = "bibtex",
    query: Annotated[str | None, typer.Option("--query", "-q", help="Keyword query.")] = None,
    doc_id: Annotated[list[str] | None, typer.Option(help="Export these papers.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default stdout).")
    ] = None,
) -> None:
    """Export citations (one paper, a search result or the whole library)."""
    from refserver.interop.common import FORMATS
    from refserver.interop.export import export_library

    fmt = format.lower()
    if fmt not in FORMATS:
        console.print(f"[red]format must be one of: {', '.join(FORMATS)}[/red]")
        raise typer.Exit(2)
    ctx = _open_ctx(with_vectors=False)
    try:
        text, count = export_library(ctx, fmt, q=query, doc_ids=doc_id or None)
    finally:
        ctx.close()
    if output:
        output.write_text(text, encoding="utf-8")
        console.print(f"{count} record(s) written to {output}")
    else:
        sys.stdout.write(text)


@metadata_app.command("import")
def metadata_import_cmd(
    file: Annotated[Path, typer.Argument(help="A .bib, .ris or CSL-JSON file.")],
    dry_run: Annotated[bool, typer.Option(help="Show matches without changing anything.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Fill or correct stored papers' metadata from a citation file (matched by DOI or title)."""
    from refserver.interop.metadata_import import import_metadata

    if not file.is_file():
        console.print(f"[red]no such file {file}[/red]")
        raise typer.Exit(2)
    ctx = _open_ctx()
    try:
        rep = import_metadata(ctx, file, dry_run=dry_run)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    finally:
        ctx.close()
    if as_json:
        print(json.dumps(rep.to_dict(), indent=2))
        return
    console.print(
        f"{rep.records} records: {len(rep.matched)} matched "
        f"({len(rep.updated)} {'would change' if dry_run else 'updated'}), "
        f"{len(rep.unmatched)} unmatched, {len(rep.ambiguous)} ambiguous"
    )
    for m in rep.updated:
        console.print(f"  {m['doc_id']} by {m['match']}: {', '.join(m['changed'])}")
