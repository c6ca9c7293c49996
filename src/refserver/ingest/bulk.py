"""Bulk import at full speed, resumable, with one job record per file.

Why this shape (DESIGN.md §2, §4, §7):

* Text extraction, OCR, metadata and the preview image are pure functions of a
  PDF, so they run in worker processes (``ProcessPoolExecutor``) that never open
  SQLite or ChromaDB: they return page texts and metadata.
* Embeddings run in this process, a paper at a time, on a small pool of threads
  sharing one single-threaded ONNX session (two calls in flight on one session
  use two cores better than one call with two intra-op threads), one chunk per
  model call (no padding; see ``_embedder_for``).
* Every write goes through ``Library.add_papers`` (the one write path): embedded
  papers are saved in small groups, one short transaction and one ChromaDB
  upsert per collection per group (see ``SAVE_GROUP_*``); job bookkeeping is
  grouped into few short transactions too.
* The batch is a set of ``jobs`` rows (kind ``ingest``) sharing a ``batch_id``.
  A rerun of the same import finds them: files already stored (by SHA-256) and
  jobs that already finished are skipped, unfinished jobs are picked up again,
  and nothing is stored twice (the paper row is the commit point).

Source files are staged into the staging folder by hard link when possible (a
copy otherwise), so the job is an ordinary ingest job the server's own pipeline
could also finish, and cleaning the staged name never touches the user's file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import select
import shutil
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymupdf

from refserver.ingest.extract import PageText, extract_pages
from refserver.ingest.intake import sweep_staging
from refserver.ingest.metadata import ExtractedMetadata, extract_metadata
from refserver.ingest.preview import render_preview
from refserver.ingest.validate import PdfRejected, validate_pdf
from refserver.storage.files import sha256_file

if TYPE_CHECKING:
    from refserver.context import AppContext

__all__ = [
    "BulkProgress",
    "BulkReport",
    "FileOutcome",
    "batch_status",
    "bulk_import",
    "collect_files",
    "default_batch_id",
    "extract_file",
]

log = logging.getLogger(__name__)

KIND = "ingest"
FINISHED = ("completed", "failed", "cancelled")
# Timing keys reported as the share of time per step.
STEP_KEYS = ("hash", "validate", "extract_text", "metadata", "preview", "embeddings", "save")
# Embedded papers are saved in groups (one transaction, one ChromaDB upsert per
# collection): a ChromaDB upsert costs ~10 ms whatever its size, so grouping makes
# the save step several times cheaper. The bounds keep the write path (and a
# backup's barrier) short and bound the work a kill -9 makes the rerun redo.
# Papers per group: ``REFSERVER_BULK_SAVE_GROUP`` (default 16).
SAVE_GROUP_PAGES = 128
SAVE_GROUP_WAIT = 3.0  # seconds the first paper of a group may wait for others


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------
@dataclass
class FileOutcome:
    """What happened to one input file."""

    file: str
    status: str  # imported | duplicate | already_stored | failed | cancelled
    job_id: str | None = None
    doc_id: str | None = None
    sha256: str | None = None
    pages: int = 0
    duplicate_of: str | None = None
    reason: str | None = None  # failure reason or duplicate kind


@dataclass
class BulkProgress:
    """A snapshot for progress bars: the same figures the API shows for a batch."""

    batch_id: str
    files_total: int
    files_done: int
    pages_done: int
    imported: int
    duplicates: int
    already_stored: int
    failed: int
    elapsed: float
    files_per_s: float
    pages_per_s: float
    eta_seconds: float | None
    current: str | None = None


@dataclass
class BulkReport:
    """The machine-readable outcome of a bulk import (``--report out.json``)."""

    batch_id: str
    files_total: int
    workers: int
    embed_threads: int
    seconds: float = 0.0
    pages: int = 0
    cancelled: bool = False
    outcomes: list[FileOutcome] = field(default_factory=list)
    step_seconds: dict[str, float] = field(default_factory=dict)

    def by_status(self, status: str) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def imported(self) -> list[FileOutcome]:
        return self.by_status("imported")

    @property
    def duplicates(self) -> list[FileOutcome]:
        return self.by_status("duplicate")

    @property
    def already_stored(self) -> list[FileOutcome]:
        return self.by_status("already_stored")

    @property
    def failed(self) -> list[FileOutcome]:
        return self.by_status("failed")

    @property
    def files_per_s(self) -> float:
        done = len(self.imported) + len(self.duplicates)
        return done / self.seconds if self.seconds > 0 else 0.0

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "imported": len(self.imported),
            "duplicates": len(self.duplicates),
            "already_stored": len(self.already_stored),
            "failed": len(self.failed),
            "cancelled": len(self.by_status("cancelled")),
        }

    def to_dict(self) -> dict[str, Any]:
        total = sum(self.step_seconds.values()) or 1.0
        return {
            "batch_id": self.batch_id,
            "files_total": self.files_total,
            "summary": self.summary(),
            "seconds": round(self.seconds, 3),
            "pages": self.pages,
            "files_per_s": round(self.files_per_s, 3),
            "pages_per_s": round(self.pages_per_s, 3),
            "workers": self.workers,
            "embed_threads": self.embed_threads,
            "cancelled": self.cancelled,
            "step_seconds": {k: round(v, 3) for k, v in self.step_seconds.items()},
            "step_share": {k: round(v / total, 4) for k, v in self.step_seconds.items()},
            "imported": [asdict(o) for o in self.imported],
            "duplicates": [asdict(o) for o in self.duplicates],
            "already_stored": [asdict(o) for o in self.already_stored],
            "skipped": [asdict(o) for o in self.already_stored],  # name used by `import`
            "failed": [asdict(o) for o in self.failed],
            "cancelled_files": [asdict(o) for o in self.by_status("cancelled")],
        }

    def write_json(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, default=str))


# --------------------------------------------------------------------------------------
# Worker side: pure functions of a PDF (no SQLite, no ChromaDB)
# --------------------------------------------------------------------------------------
def _init_worker(owner_pid: int) -> None:
    """Ctrl-C is for the parent: it stops dispatching and leaves the batch resumable."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("pymupdf").setLevel(logging.ERROR)
    _exit_with(owner_pid)


def _exit_with(owner_pid: int) -> None:
    """End this worker when the import that owns it dies, even by ``kill -9``.

    A worker's parent is the fork server, not the import, and it holds the write
    end of its own task queue, so an orphaned worker would wait on that queue
    forever — and keep the fork server alive, which lives while any of its
    children does. A daemon thread waits on a pidfd of the owner (no polling).
    """

    def watch() -> None:
        try:
            fd = os.pidfd_open(owner_pid)
        except ProcessLookupError:
            os._exit(1)
        except (AttributeError, OSError):  # no pidfd (not Linux): poll once a second
            while True:
                time.sleep(1.0)
                try:
                    os.kill(owner_pid, 0)
                except ProcessLookupError:
                    os._exit(1)
                except PermissionError:
                    continue
        select.select([fd], [], [])
        os._exit(1)

    threading.Thread(target=watch, name="owner-watch", daemon=True).start()


def extract_file(path: str, doc_id: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Validate, extract (with OCR), read metadata and render the preview of one PDF.

    Returns plain data: ``{"ok": True, "pages": [PageText], "meta": ExtractedMetadata,
    "page_count", "timings"}`` or ``{"ok": False, "step", "reason"}``. Runs in a
    worker process, so it must not touch the library's stores.
    """
    timings: dict[str, float] = {}
    t = time.perf_counter()
    try:
        page_count = validate_pdf(
            Path(path), max_bytes=opts["max_bytes"], max_pages=opts["max_pages"]
        )
    except PdfRejected as exc:
        return {"ok": False, "step": "validate", "reason": exc.reason, "code": exc.code}
    timings["validate"] = time.perf_counter() - t
    step = "extract_text"
    try:
        doc = pymupdf.open(path)
        try:
            t = time.perf_counter()
            pages = extract_pages(
                doc,
                ocr=opts["ocr"],
                ocr_languages=opts["ocr_languages"],
                quality_threshold=opts["quality_threshold"],
                ocr_dpi=opts["ocr_dpi"],
            )
            timings["extract_text"] = time.perf_counter() - t
            step = "metadata"
            t = time.perf_counter()
            meta = extract_metadata(doc, pages)
            if opts.get("llm"):
                from refserver.ingest.llm import refine_with_llm

                meta = refine_with_llm(meta, pages[0].text if pages else "", **opts["llm"])
            timings["metadata"] = time.perf_counter() - t
            step = "preview"
            t = time.perf_counter()
            previews = opts.get("previews_dir")
            if previews:
                out = Path(previews) / f"{doc_id}.png"
                if not out.exists():
                    try:
                        tmp = out.with_suffix(f".{os.getpid()}.tmp.png")
                        render_preview(doc, tmp)
                        tmp.replace(out)
                    except Exception as exc:  # a preview is a convenience, not the paper
                        log.warning("preview failed for %s: %r", path, exc)
            timings["preview"] = time.perf_counter() - t
        finally:
            doc.close()
    except Exception as exc:
        return {"ok": False, "step": step, "reason": f"{type(exc).__name__}: {exc}"}
    for p in pages:
        p.ocr_layout = None  # large and only needed inside metadata extraction
    return {
        "ok": True,
        "pages": pages,
        "meta": meta,
        "page_count": page_count,
        "timings": timings,
    }


# --------------------------------------------------------------------------------------
# Planning helpers
# --------------------------------------------------------------------------------------
def collect_files(paths: Iterable[Path | str]) -> list[Path]:
    """Files named directly (any type: a non-PDF fails with a reason) and PDFs under folders."""
    out: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() == ".pdf")
        else:
            found = [p]
        for q in found:
            r = q.resolve()
            if r not in seen:
                seen.add(r)
                out.append(r)
    return out


def default_batch_id(files: list[Path]) -> str:
    """The same list of files gives the same batch id, so a rerun resumes its batch."""
    h = hashlib.sha256("\n".join(sorted(str(f) for f in files)).encode())
    return f"bulk-{h.hexdigest()[:20]}"


def _stage(src: Path, staging_dir: Path) -> Path:
    """A staged name for ``src``: a hard link (no copy) or, across filesystems, a copy."""
    staging_dir.mkdir(parents=True, exist_ok=True)
    dest = staging_dir / f"{uuid.uuid4().hex}.pdf"
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
    return dest


@dataclass
class _Item:
    path: Path
    sha: str | None
    job_id: str
    doc_id: str
    params: dict[str, Any]
    staged: Path | None = None
    started: float = 0.0
    result: dict[str, Any] | None = None
    twins: list[_Item] = field(default_factory=list)  # identical files later in the batch
    crashes: int = 0


class _JobWriter:
    """Groups job-row changes into few short transactions (not the library write path)."""

    def __init__(self, ctx: AppContext, interval: float = 0.5) -> None:
        self.ctx = ctx
        self.interval = interval
        self.pending: dict[str, dict[str, Any]] = {}
        self.last = time.monotonic()

    def set(self, job_id: str, **fields: Any) -> None:
        self.pending.setdefault(job_id, {}).update(fields)

    def maybe_flush(self) -> None:
        if self.pending and time.monotonic() - self.last >= self.interval:
            self.flush()

    def flush(self) -> None:
        from refserver.storage.models import Job

        self.last = time.monotonic()
        if not self.pending:
            return
        pending, self.pending = self.pending, {}
        with self.ctx.db.write(bump=False) as s:
            for job_id, fields in pending.items():
                job = s.get(Job, job_id)
                if job is None:
                    continue
                for k, v in fields.items():
                    setattr(job, k, v)


def _now() -> Any:
    from refserver.jobs.store import now

    return now()


# --------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------
def bulk_import(
    ctx: AppContext,
    paths: Iterable[Path | str],
    *,
    workers: int | None = None,
    report: Path | None = None,
    progress_cb: Callable[[BulkProgress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    batch_id: str | None = None,
    params: Mapping[str, dict[str, Any]] | None = None,
    ocr: bool | None = None,
    embed_threads: int | None = None,
    retry_failed: bool = False,
    username: str | None = None,
) -> BulkReport:
    """Import many PDFs in parallel; rerun with the same paths to resume.

    ``workers``: extraction processes (default: CPU count; 0 = in this process).
    ``params``: per-file job params keyed by resolved path string, e.g.
    ``{"metadata": {..., "_source": "zotero"}}`` (that metadata wins over extracted).
    ``should_cancel()`` is polled; on cancel, files not yet saved are left
    resumable (their jobs stay queued) and the report says ``cancelled``.
    """
    from sqlalchemy import select

    from refserver.storage.models import Job, Paper

    t_start = time.monotonic()
    files = collect_files(paths)
    batch_id = batch_id or default_batch_id(files)
    # This process owns the library (Chroma lock) in the embedded mode: a copy left
    # by a killed run is garbage; elsewhere only old ones are.
    sweep_staging(ctx, min_age_seconds=0 if ctx.deployment_mode == "embedded" else 3600)
    cpu = os.cpu_count() or 1
    workers = cpu if workers is None else max(0, workers)
    embed_threads = embed_threads or max(1, min(2, cpu))
    s = ctx.settings
    params = {str(Path(k).resolve()): v for k, v in (params or {}).items()}
    rep = BulkReport(batch_id, len(files), workers, embed_threads)
    steps = dict.fromkeys(STEP_KEYS, 0.0)
    rep.step_seconds = steps

    # --- plan: hash, match against the library and the batch's earlier jobs ------------
    t = time.perf_counter()
    shas: dict[Path, str | None] = {}
    for f in files:
        try:
            shas[f] = sha256_file(f)
        except OSError:
            shas[f] = None
    steps["hash"] += time.perf_counter() - t

    known = [x for x in shas.values() if x]
    stored: dict[str, str] = {}
    prior: dict[str, list[Job]] = {}
    unreadable: dict[str, Job] = {}  # earlier jobs of files that could not be read
    with ctx.db.read() as rs:
        for i in range(0, len(known), 500):
            for doc_id, sha in rs.execute(
                select(Paper.doc_id, Paper.file_sha256).where(
                    Paper.file_sha256.in_(known[i : i + 500])
                )
            ):
                stored.setdefault(sha, doc_id)
        for job in rs.execute(
            select(Job).where(Job.batch_id == batch_id).order_by(Job.created_at)
        ).scalars():
            if job.file_sha256:
                prior.setdefault(job.file_sha256, []).append(job)
            else:
                unreadable[job.filename] = job

    todo: list[_Item] = []
    primary: dict[str, _Item] = {}
    to_create: list[dict[str, Any]] = []
    jw = _JobWriter(ctx)
    now = _now()
    used: dict[str, int] = {}
    for f in files:
        sha = shas[f]
        fparams = {"ocr": s.ocr_enabled if ocr is None else ocr, **params.get(str(f), {})}
        job = None
        if sha:  # the k-th file with these bytes takes the k-th earlier job for them
            k = used.get(sha, 0)
            used[sha] = k + 1
            earlier = prior.get(sha, [])
            job = earlier[k] if k < len(earlier) else None
        if sha is None:
            old = unreadable.pop(f.name, None)
            jid = old.id if old is not None else str(uuid.uuid4())
            if old is None:
                to_create.append(
                    dict(id=jid, filename=f.name, status="failed", error_message="unreadable file")
                )
            rep.outcomes.append(FileOutcome(str(f), "failed", jid, reason="file cannot be read"))
            continue
        if sha in primary:  # the same bytes twice in this batch
            twin = primary[sha]
            if job is not None:
                jid = job.id
            else:
                jid = str(uuid.uuid4())
                to_create.append(dict(id=jid, filename=f.name, file_sha256=sha, params=fparams))
            twin.twins.append(_Item(f, sha, jid, twin.doc_id, fparams))
            continue
        if sha in stored:
            doc_id = stored[sha]
            summary = {
                "doc_id": doc_id,
                "duplicate_file": True,
                "message": "identical file already stored",
            }
            if job is None:
                jid = str(uuid.uuid4())
                to_create.append(
                    dict(
                        id=jid,
                        filename=f.name,
                        file_sha256=sha,
                        status="completed",
                        progress=100.0,
                        current_step="done",
                        paper_id=doc_id,
                        result_summary=summary,
                        finished_at=now,
                    )
                )
            else:
                jid = job.id
                if job.status not in FINISHED:  # stored by a run that was killed
                    jw.set(
                        jid,
                        status="completed",
                        progress=100.0,
                        current_step="done",
                        paper_id=doc_id,
                        finished_at=now,
                        result_summary={**summary, "duplicate_file": False, "resumed": True},
                    )
                    _unlink(job.staged_path)
                    # Killed between the SQLite commit and ChromaDB: re-sync (idempotent).
                    ctx.library.sync_paper_vectors(doc_id)
            earlier = (
                job is not None
                and job.paper_id == doc_id
                and job.status == "completed"
                and not (job.result_summary or {}).get("duplicate_file")
            )
            rep.outcomes.append(
                FileOutcome(
                    str(f),
                    "already_stored",
                    jid,
                    doc_id=doc_id,
                    sha256=sha,
                    reason="imported earlier in this batch"
                    if earlier
                    else "identical file already stored",
                )
            )
            continue
        if job is not None and job.status == "failed" and not retry_failed:
            rep.outcomes.append(
                FileOutcome(str(f), "failed", job.id, sha256=sha, reason=job.error_message)
            )
            continue
        if job is not None and job.status not in ("completed",):
            jid = job.id  # unfinished or cancelled earlier: pick it up again
            jw.set(
                jid,
                status="queued",
                cancel_requested=False,
                error_message=None,
                finished_at=None,
                params={**(job.params or {}), **fparams},
            )
            staged = Path(job.staged_path) if job.staged_path else None
        else:
            jid = str(uuid.uuid4())
            to_create.append(dict(id=jid, filename=f.name, file_sha256=sha, params=fparams))
            staged = None
        item = _Item(f, sha, jid, str(uuid.uuid4()), fparams, staged=staged)
        primary[sha] = item
        todo.append(item)

    with ctx.db.write(bump=False) as ws:
        for row in to_create:
            ws.add(
                Job(
                    kind=KIND,
                    priority="normal",
                    batch_id=batch_id,
                    created_by=username,
                    **{"status": "queued", **row},
                )
            )
    jw.flush()

    # --- run ---------------------------------------------------------------------------
    counters = {"files_done": 0, "pages": 0}
    total_work = len(todo) + sum(len(i.twins) for i in todo)
    run_started = time.monotonic()

    def emit(current: str | None = None) -> None:
        if progress_cb is None:
            return
        elapsed = max(time.monotonic() - run_started, 1e-6)
        done = counters["files_done"]
        fps = done / elapsed
        remaining = total_work - done
        progress_cb(
            BulkProgress(
                batch_id=batch_id,
                files_total=len(files),
                files_done=done + (len(files) - total_work),
                pages_done=counters["pages"],
                imported=len(rep.imported),
                duplicates=len(rep.duplicates),
                already_stored=len(rep.already_stored),
                failed=len(rep.failed),
                elapsed=elapsed,
                files_per_s=fps,
                pages_per_s=counters["pages"] / elapsed,
                eta_seconds=(remaining / fps) if fps > 0 else None,
                current=current,
            )
        )

    emit()
    if todo:
        _run(ctx, todo, rep, jw, steps, counters, workers, embed_threads, should_cancel, emit)
    jw.flush()
    rep.pages = counters["pages"]
    rep.seconds = time.monotonic() - t_start
    emit()
    if report is not None:
        rep.write_json(report)
    return rep


def _unlink(path: str | Path | None) -> None:
    if path:
        Path(path).unlink(missing_ok=True)


def _worker_opts(ctx: AppContext) -> dict[str, Any]:
    s = ctx.settings
    llm = None
    if s.llm_enabled:
        llm = {
            "base_url": s.llm_base_url,
            "model": s.llm_model,
            "api_key": s.llm_api_key,
            "timeout": s.llm_timeout,
        }
    return {
        "max_bytes": s.max_upload_mb * 1024 * 1024,
        "max_pages": s.max_pages,
        "ocr_languages": s.ocr_languages,
        "quality_threshold": s.text_quality_threshold,
        "ocr_dpi": s.ocr_dpi,
        "previews_dir": str(s.previews_dir),
        "llm": llm,
    }


def _make_pool(workers: int) -> Executor:
    if workers <= 0:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulk-extract")
    # forkserver: never fork this multi-threaded process (ONNX, Chroma threads).
    mp = multiprocessing.get_context("forkserver")
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=mp, initializer=_init_worker, initargs=(os.getpid(),)
    )


def _embedder_for(ctx: AppContext, threads: int) -> Any:
    """The same model as ``ctx.embedder()``, tuned for throughput.

    Batch size 1: a paper's chunks differ in length (a page's last chunk, the
    title+abstract head), and padding them to the longest wasted ~25% of the
    model's CPU time (measured: 45 vs 34 chunks per CPU-second). With several
    embedding threads each call is single-threaded, so the threads use the cores
    instead of one call's intra-op threads waiting on each other.
    """
    from refserver.embedding.model import get_embedder

    return get_embedder(1 if threads > 1 else ctx.settings.embedding_threads, 1)


def _run(
    ctx: AppContext,
    todo: list[_Item],
    rep: BulkReport,
    jw: _JobWriter,
    steps: dict[str, float],
    counters: dict[str, int],
    workers: int,
    embed_threads: int,
    should_cancel: Callable[[], bool] | None,
    emit: Callable[[str | None], None],
) -> None:
    from refserver.ingest.pipeline import IngestPipeline, _apply_overrides

    s = ctx.settings
    opts = _worker_opts(ctx)
    embedder = _embedder_for(ctx, embed_threads)
    embed_pipe = IngestPipeline(s, ctx.library, ctx.jobs, lambda: embedder)
    steps_lock = threading.Lock()

    def embed(item: _Item) -> tuple[list[Any], Any]:
        t = time.perf_counter()
        res = item.result
        assert res is not None
        out = embed_pipe.embed_pages(res["pages"], res["meta"])
        with steps_lock:
            steps["embeddings"] += time.perf_counter() - t
        return out

    queue = deque(todo)
    pool = _make_pool(workers)
    epool = ThreadPoolExecutor(max_workers=embed_threads, thread_name_prefix="bulk-embed")
    extracting: dict[Future[Any], _Item] = {}
    embedding: dict[Future[Any], _Item] = {}
    max_extract = max(2, (workers or 1) * 2)
    max_embed_backlog = embed_threads * 2
    cancelled = False
    ready: list[_Ready] = []  # embedded, waiting to be saved as one group
    ready_since = 0.0
    rank = {id(it): i for i, it in enumerate(todo)}

    def finish_failed(item: _Item, step: str, reason: str) -> None:
        _finish_failed(item, step, reason, rep, jw, counters)

    def save_ready() -> None:
        """Save the waiting group; a failed group is retried paper by paper."""
        if not ready:
            return
        # In batch order (not completion order): of two files that duplicate each
        # other within a group, the earlier one is the original.
        group = sorted(ready, key=lambda r: rank[id(r.item)])
        ready.clear()
        t = time.perf_counter()
        _save_group_or_each(ctx, group, embedder, rep, jw, counters)
        steps["save"] += time.perf_counter() - t
        emit(str(group[-1].item.path))

    try:
        while queue or extracting or embedding or ready:
            if not cancelled and should_cancel is not None and should_cancel():
                cancelled = True
                rep.cancelled = True
                for fut in list(extracting):
                    if fut.cancel():
                        extracting.pop(fut)
                save_ready()  # embedded before the cancel: saved, as they always were
            while (
                not cancelled
                and queue
                and len(extracting) < max_extract
                and len(embedding) < max_embed_backlog
            ):
                item = queue.popleft()
                try:
                    if item.staged is None or not item.staged.exists():
                        item.staged = _stage(item.path, s.staging_dir)
                except OSError as exc:
                    finish_failed(item, "validate", f"cannot read the file: {exc}")
                    continue
                item.started = time.monotonic()
                jw.set(
                    item.job_id,
                    status="processing",
                    current_step="extract_text",
                    staged_path=str(item.staged),
                    started_at=_now(),
                    attempts=1,
                )
                fopts = {**opts, "ocr": bool(item.params.get("ocr", s.ocr_enabled))}
                extracting[pool.submit(extract_file, str(item.staged), item.doc_id, fopts)] = item
            jw.maybe_flush()
            if not extracting and not embedding:
                save_ready()
                break
            done, _ = wait([*extracting, *embedding], timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in done:
                if fut not in extracting and fut not in embedding:
                    continue  # dropped when a broken pool was replaced
                if fut in extracting:
                    item = extracting.pop(fut)
                    try:
                        res = fut.result()
                    except BrokenProcessPool:
                        # A worker died (a hostile file, the OOM killer): every file in
                        # flight gets one more try in a fresh pool; twice broken fails it.
                        pool.shutdown(wait=False, cancel_futures=True)
                        pool = _make_pool(workers)
                        for other in [item, *extracting.values()]:
                            other.crashes += 1
                            if other.crashes >= 2:
                                finish_failed(
                                    other, "extract_text", "the extraction process crashed"
                                )
                            else:
                                queue.appendleft(other)
                        extracting.clear()
                        continue
                    except Exception as exc:
                        finish_failed(item, "extract_text", f"{type(exc).__name__}: {exc}")
                        continue
                    for k, v in res.get("timings", {}).items():
                        steps[k] = steps.get(k, 0.0) + v
                    if cancelled:  # nothing new starts after a cancel: resumable later
                        queue.append(item)
                        continue
                    if not res["ok"]:
                        finish_failed(item, res["step"], res["reason"])
                        continue
                    res["meta"] = _apply_overrides(
                        res["meta"], dict(item.params.get("metadata") or {})
                    )
                    item.result = res
                    jw.set(item.job_id, current_step="embeddings", progress=50.0)
                    embedding[epool.submit(embed, item)] = item
                else:
                    item = embedding.pop(fut)
                    try:
                        page_vecs, paper_vec = fut.result()
                    except Exception as exc:
                        finish_failed(item, "embeddings", f"{type(exc).__name__}: {exc}")
                        continue
                    if cancelled:  # not saved: the rerun picks the file up again
                        queue.append(item)
                        continue
                    if not ready:
                        ready_since = time.monotonic()
                    ready.append(_Ready(item, page_vecs, paper_vec))
                    if (
                        len(ready) >= s.bulk_save_group
                        or sum(len(r.page_vecs) for r in ready) >= SAVE_GROUP_PAGES
                    ):
                        save_ready()
                emit(str(item.path))
            # Nothing in the embedding stage could join the group soon, or it waited
            # long enough: save now rather than let papers sit.
            if ready and (not embedding or time.monotonic() - ready_since >= SAVE_GROUP_WAIT):
                save_ready()
    except BaseException:
        # Ctrl-C or a crash: leave unsaved jobs queued so a rerun resumes them.
        for it in [*queue, *extracting.values(), *embedding.values(), *(r.item for r in ready)]:
            jw.set(it.job_id, status="queued", current_step=None)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        epool.shutdown(wait=True, cancel_futures=True)
        try:
            jw.flush()
        except Exception:
            log.exception("could not record job states")
    if cancelled:
        for it in queue:
            for x in [it, *it.twins]:
                jw.set(x.job_id, status="queued", current_step=None)
                rep.outcomes.append(FileOutcome(str(x.path), "cancelled", x.job_id, sha256=x.sha))


@dataclass
class _Ready:
    """An embedded file waiting to be saved with its group."""

    item: _Item
    page_vecs: list[Any]
    paper_vec: Any


def _save_group_or_each(
    ctx: AppContext,
    group: list[_Ready],
    embedder: Any,
    rep: BulkReport,
    jw: _JobWriter,
    counters: dict[str, int],
) -> None:
    """Save a group in one transaction; if that fails, each file on its own.

    The group write is all or nothing, so one bad file would otherwise fail its
    neighbours: retried one by one, only the bad file fails, with its own reason.
    """
    if len(group) > 1:
        try:
            _save_group(ctx, group, embedder, rep, jw, counters)
            return
        except Exception:
            log.exception("saving a group of %d files failed; saving them one by one", len(group))
    for entry in group:
        try:
            _save_group(ctx, [entry], embedder, rep, jw, counters)
        except Exception as exc:
            log.exception("saving %s failed", entry.item.path)
            _finish_failed(entry.item, "save", f"{type(exc).__name__}: {exc}", rep, jw, counters)


def _finish_failed(
    item: _Item, step: str, reason: str, rep: BulkReport, jw: _JobWriter, counters: dict[str, int]
) -> None:
    """Fail the jobs of a file (and its twins) with the step and reason."""
    for it in [item, *item.twins]:
        jw.set(
            it.job_id,
            status="failed",
            error_message=f"{step}: {reason}" if step != "validate" else reason,
            steps_failed=[{"step": step, "error": reason}],
            finished_at=_now(),
        )
        rep.outcomes.append(
            FileOutcome(str(it.path), "failed", it.job_id, sha256=it.sha, reason=reason)
        )
        counters["files_done"] += 1
    _unlink(item.staged)


def _paper_input(
    item: _Item, page_vecs: list[Any], paper_vec: Any, embedder: Any, file_size: int
) -> Any:
    """The library input of one embedded file (its PDF is already in the file store)."""
    from refserver.ingest.pipeline import _meta_dict
    from refserver.storage.library import PageInput, PaperInput

    res = item.result
    assert res is not None and item.sha is not None
    pages: list[PageText] = res["pages"]
    meta: ExtractedMetadata = res["meta"]
    metadata = _meta_dict(meta)
    sources = dict(meta.sources)
    overrides = item.params.get("metadata") or {}
    # Fields the extracted-metadata class lacks (tags from Zotero collections).
    for key in ("tags",):
        if overrides.get(key):
            metadata[key] = list(overrides[key])
            sources[key] = overrides.get("_source", "user")
    return PaperInput(
        file_sha256=item.sha,
        file_size=file_size,
        filename=item.path.name,
        page_count=res["page_count"],
        pages=[
            PageInput(p.number, p.text, p.source, p.quality, v)
            for p, v in zip(pages, page_vecs, strict=True)
        ],
        metadata=metadata,
        field_sources=sources,
        paper_vector=paper_vec,
        model=embedder.name,
        model_revision=embedder.revision,
        processing_time=round(time.monotonic() - item.started, 3),
        doc_id=item.doc_id,
    )


def _save_group(
    ctx: AppContext,
    group: list[_Ready],
    embedder: Any,
    rep: BulkReport,
    jw: _JobWriter,
    counters: dict[str, int],
) -> None:
    """Store the files and papers of a group (one library transaction), then record them.

    Nothing is recorded before the library write and the read-back succeeded, so
    on an exception the caller can retry every file of the group.
    """
    from sqlalchemy import select

    from refserver.storage.models import Paper

    with ctx.db.read() as rs:
        by_sha: dict[str, list[str]] = {}
        for doc_id, sha in rs.execute(
            select(Paper.doc_id, Paper.file_sha256).where(
                Paper.file_sha256.in_([r.item.sha for r in group])
            )
        ):
            by_sha.setdefault(sha, []).append(doc_id)
    new: list[Any] = []
    plan: list[tuple[_Ready, str | None]] = []  # (entry, doc id stored by someone else)
    for entry in group:
        item = entry.item
        assert item.sha is not None and item.staged is not None
        hits = by_sha.get(item.sha, [])
        if item.doc_id in hits:
            # Ours, committed by a group whose ChromaDB step then failed: finish it.
            ctx.library.sync_paper_vectors(item.doc_id)
            plan.append((entry, None))
        elif hits:  # stored meanwhile (e.g. by the server): never store twice
            plan.append((entry, hits[0]))
        else:
            ctx.library.files.put(item.staged, item.sha)
            size = ctx.library.files.path_for(item.sha).stat().st_size
            new.append(_paper_input(item, entry.page_vecs, entry.paper_vec, embedder, size))
            plan.append((entry, None))
    ctx.library.add_papers(new)
    mine = [e.item.doc_id for e, other in plan if other is None]
    with ctx.db.read() as rs:
        flags = {
            doc_id: (dup, reason)
            for doc_id, dup, reason in rs.execute(
                select(Paper.doc_id, Paper.duplicate_of, Paper.duplicate_reason).where(
                    Paper.doc_id.in_(mine)
                )
            )
        }
    missing = set(mine) - set(flags)
    if missing:
        raise RuntimeError(f"papers not found after saving: {sorted(missing)}")
    for entry, other in plan:
        if other is not None:
            _record(
                entry.item,
                other,
                None,
                "identical file already stored",
                rep,
                jw,
                counters,
                already_stored=True,
            )
        else:
            dup, reason = flags[entry.item.doc_id]
            counters["pages"] += len(entry.page_vecs)
            _record(entry.item, entry.item.doc_id, dup, reason, rep, jw, counters)


def _record(
    item: _Item,
    doc_id: str,
    dup: str | None,
    dup_reason: str | None,
    rep: BulkReport,
    jw: _JobWriter,
    counters: dict[str, int],
    *,
    already_stored: bool = False,
) -> None:
    """Complete the jobs of a saved file (and its twins) and report the outcome."""
    res = item.result
    assert res is not None
    pages: list[PageText] = res["pages"]
    meta: ExtractedMetadata = res["meta"]
    status = "already_stored" if already_stored else ("duplicate" if dup else "imported")
    ocr_pages = sum(1 for p in pages if p.source == "ocr")
    summary = {
        "doc_id": doc_id,
        "title": meta.title,
        "pages": len(pages),
        "ocr_pages": ocr_pages,
        "duplicate_of": dup,
        "timings": {k: round(v, 4) for k, v in res.get("timings", {}).items()},
        "message": "processed" if not dup else f"stored; probable duplicate of {dup}",
    }
    jw.set(
        item.job_id,
        status="completed",
        progress=100.0,
        current_step="done",
        paper_id=doc_id,
        result_summary=summary,
        steps_completed=[
            "validate",
            "store_file",
            "extract_text",
            "metadata",
            "embeddings",
            "save",
            "preview",
        ],
        finished_at=_now(),
        staged_path=None,
    )
    _unlink(item.staged)
    rep.outcomes.append(
        FileOutcome(
            str(item.path),
            status,
            item.job_id,
            doc_id=doc_id,
            sha256=item.sha,
            pages=len(pages),
            duplicate_of=dup,
            reason=dup_reason,
        )
    )
    counters["files_done"] += 1
    for twin in item.twins:
        jw.set(
            twin.job_id,
            status="completed",
            progress=100.0,
            current_step="done",
            paper_id=doc_id,
            finished_at=_now(),
            result_summary={
                "doc_id": doc_id,
                "duplicate_file": True,
                "message": f"identical to {item.path.name} in the same batch",
            },
        )
        rep.outcomes.append(
            FileOutcome(
                str(twin.path),
                "duplicate",
                twin.job_id,
                doc_id=doc_id,
                sha256=twin.sha,
                duplicate_of=doc_id,
                reason="identical_file_in_batch",
            )
        )
        counters["files_done"] += 1


# --------------------------------------------------------------------------------------
# Batch status (API, CLI, jobs page): totals, per-file status, rates and ETA
# --------------------------------------------------------------------------------------
def batch_status(ctx: AppContext, batch_id: str) -> dict[str, Any] | None:
    """Totals, per-file status, files/s, pages/s and ETA of a batch, from its job rows."""
    from sqlalchemy import select

    from refserver.storage.models import Job

    with ctx.db.read() as rs:
        jobs = list(
            rs.execute(
                select(Job).where(Job.batch_id == batch_id).order_by(Job.created_at, Job.id)
            ).scalars()
        )
    if not jobs:
        return None
    counts = {k: 0 for k in ("queued", "processing", "completed", "failed", "cancelled")}
    pages = 0
    processed = 0
    starts = []
    ends = []
    files = []
    for j in jobs:
        counts[j.status] = counts.get(j.status, 0) + 1
        summary = j.result_summary or {}
        if j.status == "completed" and not summary.get("duplicate_file"):
            pages += int(summary.get("pages") or 0)
        if j.started_at:
            starts.append(_aware(j.started_at))
        if j.status in FINISHED and j.finished_at and j.started_at:
            ends.append(_aware(j.finished_at))
            processed += 1
        files.append(
            {
                "job_id": j.id,
                "filename": j.filename,
                "status": j.status,
                "current_step": j.current_step,
                "progress_percentage": float(j.progress or 0.0),
                "paper_id": j.paper_id,
                "duplicate_of": summary.get("duplicate_of"),
                "duplicate_file": bool(summary.get("duplicate_file")),
                "pages": int(summary.get("pages") or 0),
                "error_message": j.error_message,
            }
        )
    total = len(jobs)
    finished = sum(counts[k] for k in FINISHED)
    remaining = total - finished
    elapsed = 0.0
    if starts:
        end = max(ends) if remaining == 0 and ends else _aware(_now())
        elapsed = max((end - min(starts)).total_seconds(), 0.0)
    fps = processed / elapsed if elapsed > 0 else 0.0
    pps = pages / elapsed if elapsed > 0 else 0.0
    eta = 0.0 if remaining == 0 else (remaining / fps if fps > 0 else None)
    return {
        "batch_id": batch_id,
        "total": total,
        "finished": finished,
        "remaining": remaining,
        "counts": counts,
        "done": remaining == 0,
        "pages": pages,
        "elapsed_seconds": round(elapsed, 3),
        "files_per_s": round(fps, 3),
        "pages_per_s": round(pps, 3),
        "eta_seconds": None if eta is None else round(eta, 1),
        "files": files,
    }


def _aware(dt: Any) -> Any:
    """SQLite hands back naive datetimes; they were written in UTC."""
    from datetime import UTC

    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
