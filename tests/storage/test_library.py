"""The write path: generation, duplicates, edits with undo, delete, schema."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select, text

from refserver.storage.models import FieldEdit, Page, Paper, Vector
from refserver.storage.vectors import PAGES, PAPERS
from tests.conftest import corpus_pdf, make_text_pdf


def ingest(ctx, path: Path, **params) -> str:
    from refserver.ingest.intake import stage_path, submit

    sub = submit(ctx, stage_path(ctx, path), enqueue=False, params=params)
    ctx.pipeline.run_job(sub.job_id)
    job = ctx.jobs.get(sub.job_id)
    assert job.status == "completed", job.error_message
    return job.paper_id


def test_ingest_writes_truth_and_index_and_bumps_generation(ctx) -> None:
    g0 = ctx.db.generation()
    doc_id = ingest(ctx, corpus_pdf("jacow"))
    assert ctx.db.generation() > g0
    with ctx.db.read() as s:
        paper = ctx.library.get(s, doc_id)
        n_pages = s.execute(
            select(func.count()).select_from(Page).where(Page.paper_id == paper.id)
        ).scalar()
        vecs = s.execute(select(Vector).where(Vector.paper_id == paper.id)).scalars().all()
        fts = s.execute(
            text("SELECT count(*) FROM papers_fts WHERE papers_fts MATCH 'cavity'")
        ).scalar()
    assert n_pages == 3 and fts == 1
    assert {v.kind for v in vecs} == {"page", "paper"}
    assert all(
        v.model == "all-MiniLM-L6-v2" and v.dimension == 384 and v.model_revision for v in vecs
    )
    assert ctx.vectors.count(PAGES) == 3 and ctx.vectors.count(PAPERS) == 1
    got = ctx.vectors.get(PAPERS, [doc_id])
    assert got["metadatas"][0]["checksum"] == next(v.checksum for v in vecs if v.kind == "paper")
    assert got["metadatas"][0]["generation"] == paper.generation


def test_same_doi_is_flagged_not_dropped(ctx, tmp_path: Path) -> None:
    a = make_text_pdf(
        tmp_path / "a.pdf", ["Deep widgets. doi:10.1234/widget.5678\n" + "Widgets are deep. " * 40]
    )
    b = make_text_pdf(
        tmp_path / "b.pdf",
        ["Deep widgets, preprint. https://doi.org/10.1234/widget.5678\n" + "Widgets. " * 60],
    )
    first = ingest(ctx, a)
    second = ingest(ctx, b)
    assert first != second
    with ctx.db.read() as s:
        p2 = ctx.library.get(s, second)
        assert p2.duplicate_of == first and p2.duplicate_reason == "same_doi"
        assert s.execute(select(func.count()).select_from(Paper)).scalar() == 2


def test_metadata_edit_records_source_and_can_be_undone(ctx) -> None:
    doc_id = ingest(ctx, corpus_pdf("jacow"))
    with ctx.db.read() as s:
        before = ctx.library.get(s, doc_id).title
    ctx.library.update_metadata(
        doc_id, {"title": "A corrected title", "year": 2019}, username="alice"
    )
    with ctx.db.read() as s:
        p = ctx.library.get(s, doc_id)
        assert p.title == "A corrected title" and p.field_sources["title"] == "user"
        edit = s.execute(select(FieldEdit).where(FieldEdit.field == "title")).scalar_one()
        fts = s.execute(
            text("SELECT count(*) FROM papers_fts WHERE papers_fts MATCH 'corrected'")
        ).scalar()
    assert fts == 1
    assert ctx.vectors.get(PAPERS, [doc_id])["metadatas"][0]["title"] == "A corrected title"
    ctx.library.undo_edit(edit.id)
    with ctx.db.read() as s:
        assert ctx.library.get(s, doc_id).title == before


def test_delete_removes_rows_vectors_and_file(ctx) -> None:
    doc_id = ingest(ctx, corpus_pdf("jacow"))
    with ctx.db.read() as s:
        sha = ctx.library.get(s, doc_id).file_sha256
    assert ctx.files.exists(sha)
    assert ctx.library.delete_paper(doc_id)
    with ctx.db.read() as s:
        assert s.execute(select(func.count()).select_from(Page)).scalar() == 0
        assert s.execute(select(func.count()).select_from(Vector)).scalar() == 0
        assert s.execute(text("SELECT count(*) FROM papers_fts")).scalar() == 0
    assert ctx.vectors.count(PAGES) == 0 and ctx.vectors.count(PAPERS) == 0
    assert not ctx.files.exists(sha)
    assert ctx.library.delete_paper(doc_id) is False


def test_sqlite_runs_in_wal_mode(ctx) -> None:
    with ctx.db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_migrations_match_models(ctx) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from refserver.storage.models import Base, include_name

    with ctx.db.engine.connect() as conn:
        mc = MigrationContext.configure(conn, opts={"include_name": include_name})
        diff = compare_metadata(mc, Base.metadata)
    assert diff == [], diff


def test_only_one_process_owns_the_chroma_folder(ctx) -> None:
    import subprocess
    import sys

    code = (
        "from refserver.storage.vectors import VectorIndex, ChromaBusy\n"
        f"try:\n    VectorIndex(__import__('pathlib').Path({str(ctx.settings.chroma_path)!r}))\n"
        "except ChromaBusy as e:\n    print('BUSY', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "BUSY" in out.stdout, out.stderr


def test_metadata_given_with_the_upload_wins_and_keeps_tags(ctx) -> None:
    doc_id = ingest(
        ctx,
        corpus_pdf("jacow"),
        metadata={"title": "From Zotero", "tags": ["cavities", "lcls-ii"], "_source": "zotero"},
    )
    with ctx.db.read() as s:
        p = ctx.library.get(s, doc_id)
    assert p.title == "From Zotero" and p.field_sources["title"] == "zotero"
    assert p.tags == ["cavities", "lcls-ii"] and p.field_sources["tags"] == "zotero"
    assert p.year == 2018 and p.field_sources["year"] != "zotero"  # extracted fields stay
