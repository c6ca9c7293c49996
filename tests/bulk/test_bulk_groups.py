"""Bulk import saves embedded papers in groups: consistent, and one bad file fails alone."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import refserver.ingest.bulk as bulk
from refserver.ingest.bulk import BulkReport, bulk_import
from refserver.safety.consistency import check
from refserver.storage.files import sha256_file
from refserver.storage.models import Job, Paper
from refserver.storage.vectors import PAGES, PAPERS
from tests.bulk.synth import make_paper_pdf


def _papers(ctx: Any) -> dict[str, Paper]:
    with ctx.db.read() as s:
        return {p.filename: p for p in s.execute(select(Paper)).scalars()}


def _jobs(ctx: Any, ids: list[str]) -> dict[str, Job]:
    with ctx.db.read() as s:
        return {j.id: j for j in s.execute(select(Job).where(Job.id.in_(ids))).scalars()}


def _entries(ctx: Any, files: list[Path]) -> list[bulk._Ready]:
    """Files staged, extracted and embedded as the engine does, with their job rows."""
    opts = {**bulk._worker_opts(ctx), "ocr": False}
    out = []
    for f in files:
        item = bulk._Item(f, sha256_file(f), str(uuid.uuid4()), str(uuid.uuid4()), {"ocr": False})
        item.staged = bulk._stage(f, ctx.settings.staging_dir)
        item.started = time.monotonic()
        item.result = bulk.extract_file(str(item.staged), item.doc_id, opts)
        assert item.result["ok"], item.result
        page_vecs, paper_vec = ctx.pipeline.embed_pages(item.result["pages"], item.result["meta"])
        out.append(bulk._Ready(item, page_vecs, paper_vec))
    with ctx.db.write(bump=False) as ws:
        for e in out:
            ws.add(
                Job(
                    id=e.item.job_id,
                    kind=bulk.KIND,
                    priority="normal",
                    batch_id="test-groups",
                    status="processing",
                    filename=e.item.path.name,
                    file_sha256=e.item.sha,
                    staged_path=str(e.item.staged),
                )
            )
    return out


def _save(ctx: Any, group: list[bulk._Ready]) -> BulkReport:
    rep = BulkReport("test-groups", len(group), 0, 1)
    jw = bulk._JobWriter(ctx)
    bulk._save_group_or_each(ctx, group, ctx.embedder(), rep, jw, {"files_done": 0, "pages": 0})
    jw.flush()
    return rep


def test_bulk_import_leaves_the_library_consistent(ctx: Any, paper_dir: Path) -> None:
    make_paper_pdf(paper_dir / "same_doi.pdf", 999, pages=2, doi="10.5100/synth.100")
    rep = bulk_import(ctx, [paper_dir], workers=2)
    assert rep.summary()["imported"] == 6 and rep.summary()["duplicates"] == 1
    assert not rep.failed
    papers = _papers(ctx)
    assert len(papers) == 7
    assert ctx.vectors.count(PAGES) == 14 and ctx.vectors.count(PAPERS) == 7
    result = check(ctx, deep=True)
    assert result.issues == [], [i.to_dict() for i in result.issues]


def test_one_bad_file_fails_alone_and_the_group_is_saved(
    ctx: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    files = [make_paper_pdf(src / f"g{i}.pdf", 300 + i, pages=2) for i in range(4)]
    group = _entries(ctx, files)
    bad = group[2].item
    assert bad.result is not None
    # An extraction result the library refuses: the same page twice.
    bad.result["pages"].append(bad.result["pages"][0])
    group[2].page_vecs.append(group[2].page_vecs[0])

    with caplog.at_level(logging.ERROR, logger="refserver.ingest.bulk"):
        rep = _save(ctx, group)
    assert "saving them one by one" in caplog.text  # the group write did fail first

    by_file = {Path(o.file).name: o for o in rep.outcomes}
    assert {n: o.status for n, o in by_file.items()} == {
        "g0.pdf": "imported",
        "g1.pdf": "imported",
        "g2.pdf": "failed",
        "g3.pdf": "imported",
    }
    assert "IntegrityError" in (by_file["g2.pdf"].reason or "")
    assert "UNIQUE constraint failed" in (by_file["g2.pdf"].reason or "")
    assert sorted(_papers(ctx)) == ["g0.pdf", "g1.pdf", "g3.pdf"]
    jobs = _jobs(ctx, [e.item.job_id for e in group])
    assert jobs[bad.job_id].status == "failed"
    assert (jobs[bad.job_id].error_message or "").startswith("save: IntegrityError")
    assert {jobs[e.item.job_id].status for e in group if e.item is not bad} == {"completed"}
    assert all(not Path(str(e.item.staged)).exists() for e in group)  # staged copies cleaned
    assert ctx.vectors.count(PAPERS) == 3 and ctx.vectors.count(PAGES) == 6
    result = check(ctx, deep=True)
    assert result.issues == [], [i.to_dict() for i in result.issues]


def test_a_group_committed_before_chromadb_is_finished_not_stored_twice(
    ctx: Any, tmp_path: Path
) -> None:
    """SQLite committed, ChromaDB not (its upsert failed): the retry finishes those papers."""
    src = tmp_path / "in"
    src.mkdir()
    files = [make_paper_pdf(src / f"c{i}.pdf", 400 + i, pages=2) for i in range(3)]
    group = _entries(ctx, files)
    embedder = ctx.embedder()
    committed = group[:2]
    inputs = []
    for e in committed:
        assert e.item.sha is not None and e.item.staged is not None
        ctx.library.files.put(e.item.staged, e.item.sha)
        size = ctx.library.files.path_for(e.item.sha).stat().st_size
        inputs.append(bulk._paper_input(e.item, e.page_vecs, e.paper_vec, embedder, size))
    ctx.library.add_papers(inputs)
    for e in committed:  # the state a failed ChromaDB upsert leaves
        ctx.vectors.delete_paper(e.item.doc_id)
    assert ctx.vectors.count(PAPERS) == 0

    rep = _save(ctx, group)
    assert [o.status for o in rep.outcomes] == ["imported"] * 3
    assert [o.doc_id for o in rep.outcomes] == [e.item.doc_id for e in group]
    assert len(_papers(ctx)) == 3  # nothing stored twice
    assert ctx.vectors.count(PAPERS) == 3 and ctx.vectors.count(PAGES) == 6
    result = check(ctx, deep=True)
    assert result.issues == [], [i.to_dict() for i in result.issues]
