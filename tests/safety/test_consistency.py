"""The consistency checker and fixer on a small real library (real SQLite, ChromaDB, PDFs)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard
from sqlalchemy import func, select

from refserver.safety import consistency
from refserver.safety.consistency import Parts, check, check_parts, fix, summary
from refserver.storage.files import FileStore, sha256_file
from refserver.storage.models import Paper, Vector
from refserver.storage.vectors import PAGES, PAPERS, VectorIndex
from tests.conftest import make_settings, make_text_pdf

OLD = time.time() - 10 * 24 * 3600  # an mtime well past any grace period

WORDS = {
    "a": "Superconducting cavities accelerate charged particle beams efficiently. ",
    "b": "Mollusk shells record the chemistry of ancient oceans in their layers. ",
    "c": "Software product lines manage variability across many related systems. ",
}


def ingest(ctx: Any, path: Path) -> str:
    from refserver.ingest.intake import stage_path, submit

    sub = submit(ctx, stage_path(ctx, path), enqueue=False, params={"ocr": False})
    ctx.pipeline.run_job(sub.job_id)
    job = ctx.jobs.get(sub.job_id)
    assert job.status == "completed", job.error_message
    return job.paper_id


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Three small synthetic papers ingested once through the real pipeline."""
    from refserver.context import AppContext

    tmp = tmp_path_factory.mktemp("consistency-template")
    data = tmp / "data"
    context = AppContext(make_settings(data))
    docs: dict[str, str] = {}
    try:
        for key, pages in (("a", 2), ("b", 3), ("c", 2)):
            texts = [f"Paper {key} page {n}. " + WORDS[key] * (20 + n) for n in range(1, pages + 1)]
            pdf = make_text_pdf(tmp / f"{key}.pdf", texts, title=f"Study {key.upper()}")
            docs[key] = ingest(context, pdf)
    finally:
        context.close()  # a closed ChromaDB folder copies safely (STACK.md)
    return data, docs


@pytest.fixture
def ctx(settings: Any, template: tuple[Path, dict[str, str]]) -> Iterator[Any]:
    """A private copy of the template library (overrides the shared ``ctx``)."""
    from refserver.context import AppContext

    shutil.copytree(template[0], settings.data_dir)
    context = AppContext(settings)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def lib(ctx: Any, template: tuple[Path, dict[str, str]]) -> dict[str, str]:
    """{key: doc_id} of the three papers in ``ctx``."""
    return dict(template[1])


def found(result: consistency.CheckResult) -> set[tuple[str, str]]:
    return {(i.type, i.entry_id or "") for i in result.issues}


def chroma_entry(ctx: Any, name: str, cid: str) -> tuple[np.ndarray, dict[str, Any]]:
    got = ctx.vectors.get(name, [cid], include=["embeddings", "metadatas"])
    return np.asarray(got["embeddings"][0], dtype=np.float32), dict(got["metadatas"][0])


def paper_sha(ctx: Any, doc_id: str) -> str:
    with ctx.db.read() as s:
        return ctx.library.get(s, doc_id).file_sha256


def raw_sqlite(ctx: Any) -> sqlite3.Connection:
    """A connection that bypasses foreign keys, as a buggy tool or manual edit would."""
    con = sqlite3.connect(ctx.settings.sqlite_path, timeout=30)
    con.execute("PRAGMA foreign_keys=OFF")
    return con


def test_fresh_library_checks_clean(ctx: Any, lib: dict[str, str]) -> None:
    result = check(ctx)
    assert result.issues == [], [i.to_dict() for i in result.issues]
    d = result.to_dict()
    assert d["overall_status"] == "healthy" and d["total_issues"] == 0
    assert d["issues_by_severity"] == {"critical": 0, "high": 0, "medium": 0, "low": 0}
    assert d["issues"] == [] and d["recommendations"]
    assert result.counts["chromadb_pages"] == 7 and result.counts["chromadb_papers"] == 3
    s = summary(ctx)
    assert s["sqlite_papers"] == 3 and s["chromadb_papers"] == 3 and s["counts_match"]
    assert s["last_check"] is None and s["status"] == "unknown"
    consistency.run_check(ctx)
    s = summary(ctx)
    assert s["status"] == "healthy" and s["last_check"]["total_issues"] == 0


def seed_every_issue(ctx: Any, lib: dict[str, str]) -> set[tuple[str, str]]:
    """Damage the library in every way the checker knows; returns the expected findings."""
    a, b, c = lib["a"], lib["b"], lib["c"]
    expected: set[tuple[str, str]] = set()
    v = ctx.vectors

    # missing_in_chromadb: a vector SQLite has, ChromaDB lacks ...
    v.delete(PAGES, ids=[f"{a}:1"])
    expected.add(("missing_in_chromadb", f"{a}:1"))
    # ... and a page with text whose vector is gone from both stores (re-embedded by fix).
    with ctx.db.write() as s:
        paper_b = ctx.library.get(s, b)
        s.execute(
            Vector.__table__.delete().where(
                Vector.paper_id == paper_b.id, Vector.kind == "page", Vector.page_number == 2
            )
        )
    v.delete(PAGES, ids=[f"{b}:2"])
    expected.add(("missing_in_chromadb", f"{b}:2"))

    emb, meta = chroma_entry(ctx, PAGES, f"{c}:1")
    unit = np.random.default_rng(1).normal(size=emb.shape).astype(np.float32)
    unit /= np.linalg.norm(unit)

    # missing_in_sqlite: ChromaDB knows a paper SQLite never heard of.
    v.upsert(
        PAGES,
        ["ghost-doc:1"],
        unit[None],
        [{**meta, "doc_id": "ghost-doc", "page": 1, "generation": 0}],
    )
    expected.add(("missing_in_sqlite", "ghost-doc:1"))
    # orphaned_chromadb: a page the paper does not have, and a paper whose deletion was audited.
    v.upsert(PAGES, [f"{a}:99"], unit[None], [{**meta, "doc_id": a, "page": 99, "generation": 0}])
    expected.add(("orphaned_chromadb", f"{a}:99"))
    ctx.audit("delete_paper", username="admin", target="deleted-doc")
    v.upsert(
        PAGES,
        ["deleted-doc:1"],
        unit[None],
        [{**meta, "doc_id": "deleted-doc", "page": 1, "generation": 0}],
    )
    expected.add(("orphaned_chromadb", "deleted-doc:1"))

    # embedding_mismatch: checksum in the entry differs; another model claimed.
    v.upsert(PAGES, [f"{c}:1"], emb[None], [{**meta, "checksum": "0" * 64}])
    expected.add(("embedding_mismatch", f"{c}:1"))
    emb_b, meta_b = chroma_entry(ctx, PAPERS, b)
    v.upsert(PAPERS, [b], emb_b[None], [{**meta_b, "model": "other-model"}])
    expected.add(("embedding_mismatch", b))

    # metadata_mismatch: title/year of a paper entry, doc_id of a page entry.
    emb_a, meta_a = chroma_entry(ctx, PAPERS, a)
    v.upsert(PAPERS, [a], emb_a[None], [{**meta_a, "title": "Wrong title", "year": 1900}])
    expected.add(("metadata_mismatch", a))
    emb_c2, meta_c2 = chroma_entry(ctx, PAGES, f"{c}:2")
    v.upsert(PAGES, [f"{c}:2"], emb_c2[None], [{**meta_c2, "doc_id": "someone-else"}])
    expected.add(("metadata_mismatch", f"{c}:2"))

    # count_mismatch: pages now -2 +3 in ChromaDB vs -1 in SQLite.
    expected.add(("count_mismatch", PAGES))

    # orphaned_sqlite + sqlite_integrity, written with foreign keys off.
    con = raw_sqlite(ctx)
    try:
        cur = con.execute(
            "INSERT INTO pages (paper_id, page_number, text, text_source, quality) "
            "VALUES (9999, 1, 'lost page', 'text_layer', 1.0)"
        )
        expected.add(("orphaned_sqlite", f"pages:{cur.lastrowid}"))
        blob = unit.astype("<f4").tobytes()
        cur = con.execute(
            "INSERT INTO vectors (paper_id, kind, page_number, chroma_id, model, model_revision, "
            "dimension, vector, checksum, generation, created_at) "
            "VALUES (9999, 'page', 1, 'gone:1', 'all-MiniLM-L6-v2', 'r', 384, ?, ?, 0, "
            "'2020-01-01 00:00:00.000000')",
            (blob, "f" * 64),
        )
        expected.add(("orphaned_sqlite", f"vectors:{cur.lastrowid}"))
        cur = con.execute(
            "INSERT INTO field_edits (paper_id, field, old_value, new_value, created_at) "
            "VALUES (9999, 'title', '\"x\"', '\"y\"', '2020-01-01 00:00:00.000000')"
        )
        expected.add(("orphaned_sqlite", f"field_edits:{cur.lastrowid}"))
        con.execute(
            "INSERT INTO jobs (id, kind, status, priority, filename, progress, steps_completed, "
            "steps_failed, step_results, result_summary, params, paper_id, cancel_requested, "
            "attempts, created_at, updated_at) VALUES ('job-vanished', 'ingest', 'completed', "
            "'normal', 'x.pdf', 100, '[]', '[]', '{}', '{}', '{}', 'vanished-doc', 0, 1, "
            "'2020-01-01 00:00:00.000000', '2020-01-01 00:00:00.000000')"
        )
        expected.add(("orphaned_sqlite", "jobs:job-vanished"))
        cur = con.execute(
            "INSERT INTO api_tokens (user_id, name, token_hash, prefix, created_at, revoked) "
            "VALUES (9999, 'stale', 'deadbeef', 'rs_x', '2020-01-01 00:00:00.000000', 0)"
        )
        expected.add(("sqlite_integrity", f"api_tokens:{cur.lastrowid}"))
        con.commit()
    finally:
        con.close()

    # Files: one missing, one altered (both have a backup copy), one unreferenced.
    backup_files = ctx.settings.backups_dir / "files"
    sha_a, sha_b = paper_sha(ctx, a), paper_sha(ctx, b)
    for sha, compress in ((sha_a, False), (sha_b, True)):
        dest = backup_files / sha[:2] / (f"{sha}.pdf" + (".zst" if compress else ""))
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = ctx.files.path_for(sha).read_bytes()
        dest.write_bytes(zstandard.ZstdCompressor().compress(data) if compress else data)
    ctx.files.path_for(sha_a).unlink()
    expected.add(("pdf_missing", sha_a))
    path_b = ctx.files.path_for(sha_b)
    data_b = bytearray(path_b.read_bytes())
    data_b[len(data_b) // 2] ^= 0xFF  # same size, different content
    os.chmod(path_b, 0o644)
    path_b.write_bytes(bytes(data_b))
    expected.add(("pdf_checksum_mismatch", sha_b))
    root = ctx.files.root
    stray = root / "ab" / f"{'ab' + '1' * 62}.pdf"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"%PDF-1.4 stray")
    os.utime(stray, (OLD, OLD))
    expected.add(("pdf_unreferenced", f"ab/{stray.name}"))

    # Junk that must NOT be reported (old mtimes so only the name rules protect them),
    # and a young unreferenced PDF: an ingest may be storing it right now.
    for rel in (
        ".DS_Store",
        "ab/Thumbs.db",
        "ab/desktop.ini",
        "ab/._shadow.pdf",
        "ab/.incoming-abc123.tmp",
        "cd/half-written.tmp",
    ):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"junk")
        os.utime(p, (OLD, OLD))
    (root / "cd" / f"{'cd' + '2' * 62}.pdf").write_bytes(b"%PDF-1.4 young")
    return expected


def test_every_seeded_issue_is_found_then_fixed(ctx: Any, lib: dict[str, str]) -> None:
    expected = seed_every_issue(ctx, lib)
    assert {t for t, _ in expected} == set(consistency.ISSUE_TYPES)
    assert ctx.db.generation() >= 4  # seeded generation-0 orphans are past the writer

    result = check(ctx)
    assert found(result) == expected  # 100% found, zero false positives
    assert len(result.issues) == len(expected)
    d = result.to_dict()
    assert d["overall_status"] == "critical" and d["total_issues"] == len(expected)
    assert sum(d["issues_by_severity"].values()) == len(expected)
    for issue in d["issues"]:
        assert issue["severity"] in ("critical", "high", "medium", "low")
        assert issue["description"] and issue["suggested_fix"]
    by_key = {(i.type, i.entry_id): i for i in result.issues}
    assert by_key[("missing_in_chromadb", f"{lib['a']}:1")].page == 1
    assert by_key[("missing_in_chromadb", f"{lib['a']}:1")].doc_id == lib["a"]
    assert by_key[("embedding_mismatch", lib["b"])].doc_id == lib["b"]

    # Dry run (the default) changes nothing.
    plan = fix(ctx)
    assert plan.dry_run and len(plan.fixed) == len(expected) and plan.failed == []
    assert found(check(ctx)) == expected

    with ctx.db.read() as s:
        papers_before = {p.doc_id: p.file_sha256 for p in s.execute(select(Paper)).scalars()}
    report = fix(ctx, dry_run=False, username="admin")
    assert report.failed == [], report.failed
    assert report.to_dict()["fixed_count"] == len(expected)

    after = check(ctx)
    assert after.issues == [], [i.to_dict() for i in after.issues]
    # No paper row, no PDF lost; the damaged PDFs are back with their SHA-256.
    with ctx.db.read() as s:
        papers_after = {p.doc_id: p.file_sha256 for p in s.execute(select(Paper)).scalars()}
    assert papers_after == papers_before
    for sha in set(papers_after.values()):
        assert sha256_file(ctx.files.path_for(sha)) == sha
    # Removed things are kept in the quarantine: the stray PDF moved, not deleted.
    q = Path(report.quarantine)
    assert (q / "files" / "ab" / f"{'ab' + '1' * 62}.pdf").read_bytes() == b"%PDF-1.4 stray"
    assert (q / "chromadb-pages.jsonl").read_text().count("\n") == 3
    assert (q / "damaged").is_dir()
    assert (ctx.files.root / "cd" / f"{'cd' + '2' * 62}.pdf").exists()  # young: untouched
    # The job keeps its old reference in its summary.
    assert ctx.jobs.get("job-vanished").result_summary["orphaned_paper_id"] == "vanished-doc"
    # Logged: a fix run with every change, and an audit entry.
    runs = consistency.history(ctx.db, kind="fix")
    assert runs[0]["fixed_count"] == len(expected) and runs[0]["failed_count"] == 0
    entries, _ = ctx.accounts.audit_entries(action="consistency_fix")
    assert entries and entries[0].detail["fixed_count"] == len(expected)


def test_in_flight_orphans_are_reported_but_not_deleted(ctx: Any, lib: dict[str, str]) -> None:
    a = lib["a"]
    emb, meta = chroma_entry(ctx, PAGES, f"{a}:1")
    gen = ctx.db.generation()
    # A writer in another process has just written these at the current generation.
    ctx.vectors.upsert(
        PAGES,
        ["inflight-doc:1"],
        emb[None],
        [{**meta, "doc_id": "inflight-doc", "generation": gen}],
    )
    con = raw_sqlite(ctx)
    try:
        con.execute(
            "INSERT INTO vectors (paper_id, kind, page_number, chroma_id, model, model_revision, "
            "dimension, vector, checksum, generation, created_at) VALUES "
            "(9999, 'paper', 0, 'inflight-doc', 'all-MiniLM-L6-v2', 'r', 384, ?, ?, ?, ?)",
            (
                emb.tobytes(),
                "e" * 64,
                gen,
                time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime()),
            ),
        )
        con.commit()
    finally:
        con.close()
    types = {i.type for i in check(ctx).issues}
    assert types == {"missing_in_sqlite", "orphaned_sqlite", "count_mismatch"}

    report = fix(ctx, dry_run=False)
    deferred = {f["type"] for f in report.failed if f.get("deferred")}
    assert deferred == {"missing_in_sqlite", "orphaned_sqlite"}
    assert ctx.vectors.get(PAGES, ["inflight-doc:1"])["ids"] == ["inflight-doc:1"]
    with ctx.db.read() as s:
        assert (
            s.execute(
                select(func.count()).select_from(Vector).where(Vector.paper_id == 9999)
            ).scalar()
            == 1
        )

    # Once the writer has moved on (more committed generations), the same fix removes them.
    for _ in range(3):
        with ctx.db.write():
            pass
    report = fix(ctx, dry_run=False)
    assert report.failed == [], report.failed
    assert ctx.vectors.get(PAGES, ["inflight-doc:1"])["ids"] == []
    assert check(ctx).issues == []


def test_rebuild_index_from_sqlite(ctx: Any, lib: dict[str, str]) -> None:
    ctx.vectors.reset_collection(PAGES)  # the index lost every page vector
    emb, meta = chroma_entry(ctx, PAPERS, lib["a"])
    ctx.vectors.upsert(PAPERS, [lib["a"]], emb[None], [{**meta, "title": "stale"}])
    ctx.vectors.upsert(PAPERS, ["never-known"], emb[None], [{**meta, "doc_id": "never-known"}])
    assert {i.type for i in check(ctx).issues} == {
        "missing_in_chromadb",
        "missing_in_sqlite",
        "count_mismatch",
        "metadata_mismatch",
    }
    report = fix(ctx, rebuild=True, dry_run=False)
    assert report.rebuilt == {PAGES: 7, PAPERS: 3}
    assert report.failed == []
    # The entry SQLite lacked is gone from the index but kept in the quarantine.
    kept = (Path(report.quarantine) / "chromadb-papers.jsonl").read_text()
    assert '"never-known"' in kept and ctx.vectors.get(PAPERS, ["never-known"])["ids"] == []
    assert check(ctx).issues == []
    assert ctx.vectors.count(PAGES) == 7


def test_deep_mode_compares_the_embeddings_themselves(ctx: Any, lib: dict[str, str]) -> None:
    cid = f"{lib['c']}:1"
    emb, meta = chroma_entry(ctx, PAGES, cid)
    other = np.roll(emb, 1)
    ctx.vectors.upsert(PAGES, [cid], other[None], [meta])  # right checksum label, wrong vector
    assert check(ctx).issues == []  # metadata-only check cannot see it (by design: fast)
    deep = check(ctx, deep=True)
    assert found(deep) == {("embedding_mismatch", cid)}
    fix(ctx, ["embedding_mismatch"], dry_run=False, deep=True)
    assert check(ctx, deep=True).issues == []
    fixed, _ = chroma_entry(ctx, PAGES, cid)
    assert np.array_equal(fixed, emb)


def test_types_filter_and_unknown_type(ctx: Any, lib: dict[str, str]) -> None:
    ctx.vectors.delete(PAGES, ids=[f"{lib['a']}:2"])
    assert found(check(ctx, ["pdf_missing"])) == set()
    assert found(check(ctx, ["missing_in_chromadb"])) == {("missing_in_chromadb", f"{lib['a']}:2")}
    with pytest.raises(ValueError, match="unknown issue type"):
        check(ctx, ["nonsense"])
    report = fix(ctx, ["count_mismatch"], dry_run=False)  # counts only: vectors left alone
    assert [f["type"] for f in report.failed] == ["count_mismatch"]
    assert ctx.vectors.get(PAGES, [f"{lib['a']}:2"])["ids"] == []


def test_check_runs_on_a_restored_copy(ctx: Any, lib: dict[str, str], tmp_path: Path) -> None:
    """The drill's use: explicit parts on a scratch folder, not the live context."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with ctx.db.barrier():
        src = sqlite3.connect(ctx.settings.sqlite_path)
        dst = sqlite3.connect(scratch / "refserver.db")
        src.backup(dst)
        src.close()
        dst.close()
        ctx.vectors.close()  # a copy taken after close restores fine (STACK.md)
        shutil.copytree(ctx.settings.chroma_path, scratch / "chroma")
    shutil.copytree(ctx.files.root, scratch / "files")
    from refserver.storage.db import Database

    db = Database(f"sqlite:///{scratch / 'refserver.db'}")
    vectors = VectorIndex(scratch / "chroma")
    try:
        files = FileStore(scratch / "files")
        clean = check_parts(db, vectors, files)
        assert clean.to_dict()["total_issues"] == 0
        victim = next(iter(files.iter_files()))[1]
        victim.unlink()
        vectors.delete(PAGES, ids=[f"{lib['b']}:3"])
        got = check(Parts(db=db, vectors=vectors, files=files))
        assert {i.type for i in got.issues} == {
            "pdf_missing",
            "missing_in_chromadb",
            "count_mismatch",
        }
    finally:
        vectors.close()
        db.dispose()


def test_writes_during_the_scan_are_confirmed_away(ctx: Any, lib: dict[str, str]) -> None:
    """Phase 1 sees a paper in ChromaDB that its SQLite snapshot predates; phase 2 drops it."""
    from refserver.storage.library import PageInput, PaperInput

    stale = consistency._snapshot(ctx.db)  # taken before the write below
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(3, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    doc = ctx.library.add_paper(
        PaperInput(
            file_sha256="f" * 64,
            file_size=1,
            filename="late.pdf",
            page_count=2,
            pages=[
                PageInput(1, "late one", "text_layer", 1.0, vecs[0]),
                PageInput(2, "late two", "text_layer", 1.0, vecs[1]),
            ],
            metadata={"title": "Arrived during the scan"},
            field_sources={},
            paper_vector=vecs[2],
            model="all-MiniLM-L6-v2",
            model_revision="test",
        )
    )
    found: dict[str, list[consistency.Issue]] = {}
    for name in (PAGES, PAPERS):
        have, _ = consistency._scan_chroma(ctx.vectors, name, False)
        want = consistency._want(stale, consistency.KIND_OF[name])
        found[name] = consistency._compare_collection(name, want, have, None, stale)
    suspects = {(i.type, i.entry_id) for v in found.values() for i in v}
    assert suspects == {
        ("missing_in_sqlite", f"{doc}:1"),
        ("missing_in_sqlite", f"{doc}:2"),
        ("missing_in_sqlite", doc),
    }
    confirmed, dropped = consistency._confirm(Parts.from_ctx(ctx), found, False)
    assert confirmed == {PAGES: [], PAPERS: []} and dropped == 3


def test_direct_metadata_read_matches_the_chroma_api(ctx: Any, lib: dict[str, str]) -> None:
    """The embedded fast path returns exactly what ChromaDB's own ``get`` returns."""
    for name in (PAGES, PAPERS):
        direct = consistency.read_metadata_direct(ctx.vectors, name)
        assert direct is not None
        got = ctx.vectors.collection(name).get(include=["metadatas"])
        assert direct == {cid: dict(m) for cid, m in zip(got["ids"], got["metadatas"], strict=True)}
    # A seeded mismatch is seen the same way by both paths.
    emb, meta = chroma_entry(ctx, PAPERS, lib["a"])
    ctx.vectors.upsert(PAPERS, [lib["a"]], emb[None], [{**meta, "year": 1066}])
    assert consistency.read_metadata_direct(ctx.vectors, PAPERS)[lib["a"]]["year"] == 1066
    assert found(check(ctx)) == {("metadata_mismatch", lib["a"])}


def test_orphan_past_the_grace_period_is_removed_even_at_current_generation(
    ctx: Any, lib: dict[str, str]
) -> None:
    """The age rule: a ChromaDB entry's age is the time since a recorded check first saw it."""
    emb, meta = chroma_entry(ctx, PAGES, f"{lib['a']}:1")
    gen = ctx.db.generation()
    ctx.vectors.upsert(
        PAGES, ["stale-doc:1"], emb[None], [{**meta, "doc_id": "stale-doc", "generation": gen}]
    )
    parts = Parts.from_ctx(ctx)
    parts.grace_seconds = 1
    first = consistency.run_check(parts)  # recorded: first seen now
    assert first["issues_by_type"]["missing_in_sqlite"] == 1
    report = fix(parts, ["missing_in_sqlite"], dry_run=False)
    assert [f["type"] for f in report.failed] == ["missing_in_sqlite"]  # seen < 1 s ago
    time.sleep(1.2)
    report = fix(parts, ["missing_in_sqlite"], dry_run=False)
    assert report.failed == [] and "grace period" in report.fixed[0]["action"]
    assert ctx.vectors.get(PAGES, ["stale-doc:1"])["ids"] == []
