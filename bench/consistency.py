"""Consistency check time at 10k and 100k pages (target: full check of 100k pages <= 10 s).

The library is built directly, not through the ingest pipeline (embedding 100k
pages would take ~40 min): bulk inserts into SQLite (papers of 10 pages, each
page ~2 KB of text, a 384-d float32 vector per page and per paper with its
SHA-256, generation and model) through the real schema, ChromaDB upserts of the
same random unit vectors with the metadata ``Library`` writes, and one small
content-addressed file per paper in the real ``FileStore`` layout. Every paper is
in both full-text indexes (the checker reads their ``_docsize`` tables, and
``integrity_check`` scans them), and the HNSW graph is built with cheap parameters (the checker never reads it).

Printed per size: summary time; full check time (clean; the median of three
runs, wall and process CPU seconds, because this machine is shared), split into
the SQLite snapshot, the ChromaDB metadata scan, ``PRAGMA integrity_check`` and
the files; the same with 22 seeded issues (their confirmation runs under the
write barrier) and their fix; a deep check (embeddings compared); and, as
baselines measured in the same run, the same check through ChromaDB's public API
only (no embedded fast path: what a Chroma-server deployment gets) and a naive
per-id ChromaDB lookup extrapolated from 1,000 ids.

    .venv/bin/python bench/consistency.py [--sizes 10000 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from refserver.safety import consistency  # noqa: E402
from refserver.safety.consistency import Parts  # noqa: E402
from refserver.storage.db import Database  # noqa: E402
from refserver.storage.files import FileStore  # noqa: E402
from refserver.storage.vectors import PAGES, PAPERS, VectorIndex  # noqa: E402

PAGES_PER_PAPER = 10
DIM = 384
MODEL = "all-MiniLM-L6-v2"
TEXT = ("Consistency of a library of scientific papers is checked page by page. " * 30)[:2000]


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("<f4")


def build(root: Path, n_pages: int) -> tuple[Database, VectorIndex, FileStore, float]:
    t0 = time.perf_counter()
    rng = np.random.default_rng(7)
    db = Database(f"sqlite:///{root / 'refserver.db'}")
    db.migrate()
    files = FileStore(root / "files")
    # Cheap HNSW parameters: the checker reads ids and metadata, never the graph,
    # and the default M=32/ef_construction=200 makes the 100k build take minutes.
    vectors = VectorIndex(root / "chroma", hnsw={"max_neighbors": 8, "ef_construction": 16})
    n_papers = n_pages // PAGES_PER_PAPER
    gen = 1
    con = sqlite3.connect(root / "refserver.db")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    now = "2026-01-01 00:00:00.000000"
    for start in range(0, n_papers, 1000):
        stop = min(n_papers, start + 1000)
        papers, pages, vecs = [], [], []
        page_meta, paper_meta = [], []
        page_ids, paper_ids = [], []
        page_mat = unit_vectors(rng, (stop - start) * PAGES_PER_PAPER)
        paper_mat = unit_vectors(rng, stop - start)
        for k, pid in enumerate(range(start + 1, stop + 1)):
            doc = f"doc-{pid:07d}"
            body = f"%PDF-1.4 paper {pid}\n".encode() + b"x" * 1000
            sha = hashlib.sha256(body).hexdigest()
            path = files.path_for(sha)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
            title, year = f"Paper number {pid}", 1990 + pid % 35
            papers.append(
                (
                    pid,
                    doc,
                    f"{doc}.pdf",
                    sha,
                    len(body),
                    PAGES_PER_PAPER,
                    title,
                    year,
                    gen,
                    now,
                    now,
                )
            )
            for page in range(1, PAGES_PER_PAPER + 1):
                pages.append((pid, page, TEXT, "text_layer", 1.0))
                v = page_mat[k * PAGES_PER_PAPER + page - 1]
                blob = v.tobytes()
                digest = hashlib.sha256(blob).hexdigest()
                cid = f"{doc}:{page}"
                vecs.append((pid, "page", page, cid, MODEL, "bench", DIM, blob, digest, gen, now))
                page_ids.append(cid)
                page_meta.append(
                    {
                        "doc_id": doc,
                        "paper_id": pid,
                        "page": page,
                        "kind": "page",
                        "title": title,
                        "year": year,
                        "generation": gen,
                        "checksum": digest,
                        "model": MODEL,
                        "dimension": DIM,
                    }
                )
            blob = paper_mat[k].tobytes()
            digest = hashlib.sha256(blob).hexdigest()
            vecs.append((pid, "paper", 0, doc, MODEL, "bench", DIM, blob, digest, gen, now))
            paper_ids.append(doc)
            paper_meta.append(
                {
                    "doc_id": doc,
                    "paper_id": pid,
                    "page": 0,
                    "kind": "paper",
                    "title": title,
                    "year": year,
                    "generation": gen,
                    "checksum": digest,
                    "model": MODEL,
                    "dimension": DIM,
                }
            )
        con.executemany(
            "INSERT INTO papers (id, doc_id, filename, file_sha256, file_size, page_count, title, "
            "year, generation, created_at, updated_at, authors, keywords, tags, field_sources, "
            "ocr_quality, ocr_pages, processing_time) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,'[]','[]','[]','{}',1.0,0,0.0)",
            papers,
        )
        con.executemany(
            "INSERT INTO pages (paper_id, page_number, text, text_source, quality) VALUES (?,?,?,?,?)",
            pages,
        )
        con.executemany(
            "INSERT INTO vectors (paper_id, kind, page_number, chroma_id, model, model_revision, "
            "dimension, vector, checksum, generation, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            vecs,
        )
        # Indexed for keyword search as ingest does (the checker reads the
        # indexes' _docsize tables, and integrity_check scans them).
        con.execute(
            "INSERT INTO papers_fts (rowid, title, authors, abstract, keywords, journal) "
            f"SELECT id, coalesce(title, ''), '', '', '', '' FROM papers WHERE id > {start} "
            f"AND id <= {stop}"
        )
        con.execute(
            "INSERT INTO paper_bodies_fts (rowid, body) SELECT id, body FROM paper_bodies "
            f"WHERE id > {start} AND id <= {stop}"
        )
        con.commit()
        vectors.upsert(PAGES, page_ids, page_mat, page_meta)
        vectors.upsert(PAPERS, paper_ids, paper_mat, paper_meta)
    con.execute("UPDATE library_state SET generation = ? WHERE id = 1", (gen + 5,))
    if con.execute("SELECT count(*) FROM library_state").fetchone()[0] == 0:
        con.execute(
            "INSERT INTO library_state (id, generation, updated_at) VALUES (1, ?, ?)",
            (gen + 5, now),
        )
    con.commit()
    con.close()
    return db, vectors, files, time.perf_counter() - t0


def timed(fn, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN201
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def bench(n_pages: int, keep: bool) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix=f"cons-bench-{n_pages}-"))
    try:
        db, vectors, files, build_s = build(root, n_pages)
        parts = Parts(db=db, vectors=vectors, files=files, grace_seconds=0)
        print(
            f"\n== {n_pages:,} pages ({n_pages // PAGES_PER_PAPER:,} papers): built in {build_s:.1f} s "
            f"(SQLite {(root / 'refserver.db').stat().st_size / 1e6:.0f} MB)"
        )
        consistency.check(parts)  # warm caches once, like a server that has been running
        _, summary_s = timed(consistency.summary, parts)
        runs = []
        for _ in range(3):
            cpu0 = time.process_time()
            clean, wall = timed(consistency.check, parts)
            runs.append((wall, time.process_time() - cpu0))
            assert clean.total_issues == 0, clean.issues_by_type
        check_s, check_cpu = sorted(runs)[1]
        # Parts of the check, measured on their own.
        snap, snap_s = timed(consistency._snapshot, db)
        _, scan_s = timed(
            lambda: [consistency._scan_chroma(vectors, n, False) for n in (PAGES, PAPERS)]
        )
        _, integ_s = timed(consistency._integrity_issues, db)
        _, files_s = timed(consistency._file_issues, snap, files, 0, True)

        # Baseline 1: the same check through ChromaDB's public API only (no fast path):
        # what a deployment with a Chroma server gets.
        consistency.USE_DIRECT_READ = False
        _, api_s = timed(consistency.check, parts)
        consistency.USE_DIRECT_READ = True

        # Baseline 2: naive per-id lookups, extrapolated from 1,000 ids.
        ids = [f"doc-{p:07d}:1" for p in range(1, 1001)]
        t0 = time.perf_counter()
        for cid in ids[: min(1000, n_pages // PAGES_PER_PAPER)]:
            vectors.get(PAGES, [cid])
        naive_s = (
            (time.perf_counter() - t0) / min(1000, n_pages // PAGES_PER_PAPER) * (n_pages * 1.1)
        )
        # With issues: 10 missing, 11 orphaned entries, a count mismatch -> confirmed under the barrier.
        vectors.delete(PAGES, ids=[f"doc-{p:07d}:3" for p in range(1, 11)])
        emb = unit_vectors(np.random.default_rng(1), 11)
        vectors.upsert(
            PAGES,
            [f"ghost-{i}:1" for i in range(11)],
            emb,
            [{"doc_id": f"ghost-{i}", "page": 1, "generation": 0} for i in range(11)],
        )
        dirty, dirty_s = timed(consistency.check, parts)
        assert dirty.issues_by_type == {
            "missing_in_chromadb": 10,
            "missing_in_sqlite": 11,
            "count_mismatch": 1,
        }, dirty.issues_by_type
        report, fix_s = timed(consistency.fix, parts, None, False, dry_run=False)
        assert not report.failed, report.failed[:3]
        deep, deep_s = timed(consistency.check, parts, deep=True)
        assert deep.total_issues == 0, deep.issues_by_type
        print(f"summary                         {summary_s * 1000:8.1f} ms")
        print(
            f"full check (clean)              {check_s:8.2f} s   (CPU {check_cpu:.2f} s) target <= 10 s at 100k pages"
        )
        print(f"  SQLite snapshot               {snap_s:8.2f} s")
        print(f"  ChromaDB metadata scan        {scan_s:8.2f} s")
        print(f"  PRAGMA integrity_check + FK   {integ_s:8.2f} s")
        print(f"  PDF files (hash every file)   {files_s:8.2f} s")
        print(
            f"full check with 22 issues       {dirty_s:8.2f} s   (suspects confirmed under the barrier)"
        )
        print(f"fix of those 22 issues          {fix_s:8.2f} s   (includes its fresh check)")
        print(f"deep check (embeddings)         {deep_s:8.2f} s")
        print(
            f"baseline: check via public API  {api_s:8.2f} s   (no fast path) api / check = {api_s / check_s:.1f}x"
        )
        print(
            f"baseline: naive per-id lookups  {naive_s:8.2f} s   (extrapolated) naive / check = {naive_s / check_s:.1f}x"
        )
        vectors.close()
        db.dispose()
        return {"check_s": check_s, "summary_s": summary_s, "api_s": api_s}
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--keep", action="store_true", help="keep the generated libraries")
    args = ap.parse_args()
    results = {n: bench(n, args.keep) for n in args.sizes}
    print("\npages      check s   via API s   summary ms")
    for n, r in results.items():
        print(f"{n:>7,}   {r['check_s']:8.2f}   {r['api_s']:9.2f}   {r['summary_s'] * 1000:9.1f}")


if __name__ == "__main__":
    main()
