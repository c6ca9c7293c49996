"""The bulk engine against real SQLite, ChromaDB and PDFs: results, duplicates, resume after kill -9."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from refserver.context import AppContext
from refserver.embedding.model import from_blob
from refserver.ingest.bulk import BulkProgress, batch_status, bulk_import
from refserver.ingest.extract import PageText
from refserver.ingest.metadata import ExtractedMetadata
from refserver.storage.models import Job, Page, Paper, Vector
from tests.bulk.synth import make_paper_pdf
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]


def _papers(ctx: AppContext) -> list[Paper]:
    with ctx.db.read() as s:
        return list(s.execute(select(Paper)).scalars())


def test_bulk_import_stores_everything_once_with_report(
    ctx: Any, paper_dir: Path, tmp_path: Path
) -> None:
    (paper_dir / "notes.pdf").write_text("this is not a PDF at all")
    seen: list[BulkProgress] = []
    out = tmp_path / "report.json"
    rep = bulk_import(ctx, [paper_dir], workers=2, report=out, progress_cb=seen.append)

    assert rep.summary() == {
        "imported": 6,
        "duplicates": 0,
        "already_stored": 0,
        "failed": 1,
        "cancelled": 0,
    }
    assert "not a PDF" in (rep.failed[0].reason or "")
    papers = _papers(ctx)
    assert len(papers) == 6
    assert all(p.title and p.doi for p in papers)
    with ctx.db.read() as s:
        assert s.execute(select(func.count()).select_from(Page)).scalar_one() == 12
    # Vectors reached ChromaDB: 2 pages + 1 paper vector per paper.
    assert ctx.vectors.count("pages") == 12
    assert ctx.vectors.count("papers") == 6
    # The bulk engine's vectors are the sequential pipeline's (batching differs only).
    with ctx.db.read() as s:
        paper = ctx.library.get(s, papers[0].doc_id, with_pages=True)
        rows = s.execute(select(Vector).where(Vector.paper_id == paper.id)).scalars().all()
        pages = [
            PageText(p.page_number, p.text, p.text_source, p.quality, False) for p in paper.pages
        ]
    page_vecs, paper_vec = ctx.pipeline.embed_pages(
        pages, ExtractedMetadata(title=paper.title, abstract=paper.abstract)
    )
    stored = {(r.kind, r.page_number): from_blob(r.vector) for r in rows}
    assert float(np.dot(stored[("paper", 0)], paper_vec)) > 0.999
    assert float(np.dot(stored[("page", 1)], page_vecs[0])) > 0.999
    # Progress carried rates and reached the end.
    last = seen[-1]
    assert last.files_done == last.files_total == 7
    assert last.pages_done == 12 and last.pages_per_s > 0 and last.files_per_s > 0
    # The JSON report is machine-readable and matches.
    data = json.loads(out.read_text())
    assert data["summary"]["imported"] == 6 and len(data["failed"]) == 1
    assert data["failed"][0]["reason"]
    assert set(data["step_seconds"]) >= {"extract_text", "metadata", "embeddings", "save"}
    # One job per file in the batch; all finished; the staging folder is clean.
    st = batch_status(ctx, rep.batch_id)
    assert st is not None and st["total"] == 7 and st["done"]
    assert st["counts"]["completed"] == 6 and st["counts"]["failed"] == 1
    assert not list(ctx.settings.staging_dir.iterdir())
    # The source files are untouched (staging used links/copies).
    assert len(list(paper_dir.glob("*.pdf"))) == 7

    # A second run of the same import is a no-op that reports what exists.
    again = bulk_import(ctx, [paper_dir], workers=1)
    assert again.batch_id == rep.batch_id
    assert len(again.already_stored) == 6 and len(again.failed) == 1
    assert {o.reason for o in again.already_stored} == {"imported earlier in this batch"}
    assert not again.imported
    assert len(_papers(ctx)) == 6
    with ctx.db.read() as s:
        n_jobs = s.execute(
            select(func.count()).select_from(Job).where(Job.batch_id == rep.batch_id)
        ).scalar_one()
    assert n_jobs == 7  # no new job rows on a rerun


def test_duplicates_inside_one_batch(ctx: Any, tmp_path: Path) -> None:
    d = tmp_path / "dups"
    d.mkdir()
    a = make_paper_pdf(d / "a.pdf", 1, pages=2, words_per_page=100, doi="10.1234/same.doi")
    shutil.copy(a, d / "a_copy.pdf")  # the same bytes twice
    make_paper_pdf(d / "b.pdf", 2, pages=2, words_per_page=100, doi="10.1234/same.doi")
    rep = bulk_import(ctx, [d], workers=1)

    papers = _papers(ctx)
    assert len(papers) == 2  # the identical copy is not stored again
    by_sha = {p.file_sha256: p for p in papers}
    assert len(by_sha) == 2
    flagged = [p for p in papers if p.duplicate_of]
    assert len(flagged) == 1 and flagged[0].duplicate_reason == "same_doi"
    original = next(p for p in papers if not p.duplicate_of)
    assert flagged[0].duplicate_of == original.doc_id

    kinds = {Path(o.file).name: (o.status, o.reason) for o in rep.outcomes}
    assert kinds["b.pdf"] == ("duplicate", "same_doi")
    statuses = sorted(kinds[n][0] for n in ("a.pdf", "a_copy.pdf"))
    assert statuses == ["duplicate", "imported"]
    twin = next(o for o in rep.outcomes if o.reason == "identical_file_in_batch")
    assert twin.doc_id == original.doc_id
    st = batch_status(ctx, rep.batch_id)
    assert st is not None and st["counts"]["completed"] == 3


def test_cancel_leaves_the_rest_resumable(ctx: Any, paper_dir: Path, monkeypatch: Any) -> None:
    # Groups of 2 so that "two stored" happens mid-run (6 small files otherwise
    # land in one group at the end).
    monkeypatch.setattr(ctx.settings, "bulk_save_group", 2)

    def cancel_after_two() -> bool:
        return len(_papers(ctx)) >= 2

    rep = bulk_import(ctx, [paper_dir], workers=1, should_cancel=cancel_after_two)
    assert rep.cancelled
    stored = len(_papers(ctx))
    assert 2 <= stored < 6
    left = rep.by_status("cancelled")
    assert left and all(o.job_id for o in left)
    rest = bulk_import(ctx, [paper_dir], workers=1)
    assert not rest.cancelled
    assert len(_papers(ctx)) == 6
    assert len(rest.already_stored) == stored  # not redone
    assert len(rest.imported) == 6 - stored


CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.conftest import make_settings
from refserver.context import AppContext
from refserver.ingest.bulk import bulk_import
# groups of 2: several groups, so the kill lands between (or inside) them
ctx = AppContext(make_settings(Path({data!r}), bulk_save_group=2))
bulk_import(ctx, [Path({src!r})], workers=1)
print("FINISHED")
"""


def test_resume_after_kill_9(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    n = 12
    for i in range(n):
        make_paper_pdf(src / f"p{i:02d}.pdf", 500 + i, pages=3, words_per_page=220)
    data = tmp_path / "data"
    db = data / "refserver.db"
    code = CHILD.format(root=str(ROOT), data=str(data), src=str(src))
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )

    def count() -> int:
        if not db.exists():
            return 0
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM papers").fetchone()[0]
        except sqlite3.OperationalError:
            return 0
        finally:
            con.close()

    deadline = time.monotonic() + 180
    while count() < 2:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        assert time.monotonic() < deadline, "the import stored nothing in time"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    at_kill = count()
    assert 2 <= at_kill < n, f"kill landed at {at_kill}/{n}; the test needs a mid-run kill"

    ctx = AppContext(make_settings(data))
    try:
        with ctx.db.read() as s:
            unfinished_before = s.execute(
                select(func.count())
                .select_from(Job)
                .where(Job.status.in_(("queued", "processing")))
            ).scalar_one()
        assert unfinished_before > 0  # the kill left work behind
        rep = bulk_import(ctx, [src], workers=2)
        papers = _papers(ctx)
        shas = [p.file_sha256 for p in papers]
        assert len(papers) == n and len(set(shas)) == n  # every file stored exactly once
        assert len(rep.failed) == 0
        with ctx.db.read() as s:
            left = s.execute(
                select(func.count())
                .select_from(Job)
                .where(Job.status.in_(("queued", "processing")))
            ).scalar_one()
            jobs = s.execute(
                select(func.count()).select_from(Job).where(Job.batch_id == rep.batch_id)
            ).scalar_one()
        assert left == 0
        assert jobs == n  # the rerun reused the killed run's batch record
        # ChromaDB holds exactly the stored vectors, nothing twice.
        assert ctx.vectors.count("papers") == n
        assert ctx.vectors.count("pages") == 3 * n
        assert not list(ctx.settings.staging_dir.iterdir())
    finally:
        ctx.close()


OWNER = """
import multiprocessing.forkserver, sys, time
sys.path.insert(0, {root!r})
from refserver.ingest.bulk import _make_pool
if __name__ == "__main__":
    pool = _make_pool(2)
    list(pool.map(time.sleep, [0.5, 0.5]))  # both workers started
    server = multiprocessing.forkserver._forkserver._forkserver_pid
    print(" ".join(str(p) for p in [server, *pool._processes]), flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is pending


def test_kill_9_of_the_owner_ends_its_workers_and_fork_server() -> None:
    """No orphans: the workers (and the fork server they keep alive) follow their import."""
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER.format(root=str(ROOT))],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    pids = [int(x) for x in line.split()]
    assert len(pids) == 3, (line, proc.stderr.read().decode()[-2000:] if proc.stderr else "")
    assert all(_alive(p) for p in pids)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in pids if _alive(p)]
    for p in left:  # do not leave them behind even when the test fails
        os.kill(p, signal.SIGKILL)
    assert not left, f"still running after the owner's kill -9: {left}"
