"""Vectors stored as int8 / float16 in SQLite (``vector_storage``) and ``index requantize``.

Real model embeddings, real PDFs through the ingest pipeline, real SQLite and
ChromaDB: the encodings keep ranking, ChromaDB holds exactly the decoded vectors,
and converting an existing library is resumable and leaves it consistent.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from refserver.embedding.model import (
    blob_size,
    decode_vector,
    decode_vectors,
    encode_vector,
    get_embedder,
    normalize,
)
from refserver.safety.consistency import INDEX_TYPES, check
from refserver.search import Filters, semantic_search, similar_papers
from refserver.search.requantize import requantize, storage_stats
from refserver.search.semantic import page_hits
from refserver.storage.models import Vector
from refserver.storage.vectors import PAGES, PAPERS
from tests.conftest import ingest_pdf, make_settings, make_text_pdf
from tests.search.conftest import TOPICS, add_paper


def _real_vectors() -> np.ndarray:
    texts = [p for t in TOPICS for p in t["pages"]] + [t["title"] for t in TOPICS]
    return get_embedder().embed(texts)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (normalize(a) * normalize(b)).sum(axis=-1)


# --- the encoding ----------------------------------------------------------------------
def test_round_trip_error_bounds_and_sizes() -> None:
    rng = np.random.default_rng(0)
    real = _real_vectors()
    rand = normalize(rng.normal(size=(500, 384)).astype(np.float32))
    for vecs in (real, rand):
        for dtype, bound in (("float32", 0.9999999), ("float16", 0.9999), ("int8", 0.999)):
            blobs = [encode_vector(v, dtype) for v in vecs]
            assert {len(b) for b in blobs} == {blob_size(dtype, 384)}
            back = np.vstack([decode_vector(b, dtype, 384) for b in blobs])
            assert back.dtype == np.float32 and back.shape == vecs.shape
            assert np.allclose(np.linalg.norm(back, axis=1), 1.0, atol=1e-6)  # unit on decode
            assert float(_cos(back, vecs).min()) >= bound, dtype
            # The batched decode is the same decode.
            assert np.array_equal(decode_vectors(blobs, [dtype] * len(blobs), 384), back)
    assert len(encode_vector(real[0], "float32")) == 1536
    assert len(encode_vector(real[0], "float16")) == 768
    assert len(encode_vector(real[0], "int8")) == 4 + 384  # float32 scale + codes
    assert len(encode_vector(real[0], "int8")) <= 1536 / 3.5
    # float32 stays the historical layout, so existing rows need no rewrite.
    assert encode_vector(real[0], "float32") == np.asarray(real[0], dtype="<f4").tobytes()
    # int8 layout: scale = max|v| / 127, the largest component is code ±127.
    blob = encode_vector(real[0], "int8")
    scale = np.frombuffer(blob[:4], dtype="<f4")[0]
    codes = np.frombuffer(blob[4:], dtype=np.int8)
    assert scale == pytest.approx(np.abs(real[0]).max() / 127, rel=1e-6)
    assert int(np.abs(codes).max()) == 127
    # Mixed dtypes in one batch decode row by row.
    mixed = [encode_vector(real[i], d) for i, d in enumerate(("int8", "float16", "float32"))]
    m = decode_vectors(mixed, ["int8", "float16", "float32"], 384)
    for i, d in enumerate(("int8", "float16", "float32")):
        assert np.array_equal(m[i], decode_vector(mixed[i], d, 384))
    # A zero vector survives; wrong sizes and unknown encodings are refused.
    assert not np.isnan(decode_vector(encode_vector(np.zeros(384), "int8"), "int8", 384)).any()
    with pytest.raises(ValueError):
        decode_vector(blob[:-1], "int8", 384)
    with pytest.raises(ValueError):
        decode_vector(encode_vector(real[0], "float32"), "float16", 384)
    with pytest.raises(ValueError):
        encode_vector(real[0], "bfloat16")


# --- the schema --------------------------------------------------------------------------
def test_migration_marks_existing_rows_float32_and_guards_its_downgrade(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from refserver.storage.db import MIGRATIONS_DIR, Database

    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", db.url)
    cfg.attributes["connection_engine"] = db.engine
    command.upgrade(cfg, "0002")  # a library from before the column
    vec = _real_vectors()[0]
    blob = encode_vector(vec, "float32")
    with db.engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO papers (id, doc_id, filename, file_sha256, file_size, page_count, "
                "authors, keywords, tags, field_sources, ocr_quality, ocr_pages, "
                "processing_time, generation, created_at, updated_at) VALUES (1, 'd', 'd.pdf', "
                "'x', 1, 1, '[]', '[]', '[]', '{}', 1, 0, 0, 0, '2026-01-01', '2026-01-01')"
            )
        )
        c.execute(
            text(
                "INSERT INTO vectors (paper_id, kind, page_number, chroma_id, model, "
                "model_revision, dimension, vector, checksum, generation, created_at) VALUES "
                "(1, 'paper', 0, 'd', 'm', 'r', 384, :b, :c, 0, '2026-01-01')"
            ),
            {"b": blob, "c": hashlib.sha256(blob).hexdigest()},
        )
    command.upgrade(cfg, "vector_storage_0001")
    with db.read() as s:
        row = s.execute(select(Vector)).scalar_one()
    assert row.dtype == "float32" and row.vector == blob
    assert np.allclose(decode_vector(row.vector, row.dtype, row.dimension), vec, atol=1e-7)
    # Downgrading with int8 rows would make them unreadable: refused.
    with db.engine.begin() as c:
        c.execute(text("UPDATE vectors SET dtype = 'int8'"))
    with pytest.raises(RuntimeError, match="requantize"):
        command.downgrade(cfg, "0002")
    with db.engine.begin() as c:
        c.execute(text("UPDATE vectors SET dtype = 'float32'"))
    command.downgrade(cfg, "0002")
    with db.engine.connect() as c:
        cols = {r[1] for r in c.exec_driver_sql("PRAGMA table_info(vectors)")}
    assert "dtype" not in cols
    db.dispose()


# --- a library ingested with int8 storage ---------------------------------------------------
PDF_TOPICS = TOPICS[:4]


def _pdfs(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, t in enumerate(PDF_TOPICS):
        pages = [f"{t['title']}\n\n" + (p + " ") * 6 for p in t["pages"]]
        out.append(make_text_pdf(folder / f"paper{i}.pdf", pages, title=t["title"]))
    return out


def _library(tmp_path: Path, storage: str) -> tuple[Any, dict[str, str]]:
    from refserver.context import AppContext

    ctx = AppContext(make_settings(tmp_path / storage, vector_storage=storage))
    titles = {}
    for t, pdf in zip(PDF_TOPICS, _pdfs(tmp_path / f"pdfs-{storage}"), strict=True):
        titles[ingest_pdf(ctx, pdf)] = t["title"]
    return ctx, titles


QUERIES = [
    "cold resonator made of niobium",
    "ammonite shells in marine shale",
    "neural network predicts how proteins fold",
    "battery drain of mobile applications",
]


def test_int8_storage_answers_like_float32(tmp_path: Path) -> None:
    f32, f32_titles = _library(tmp_path, "float32")
    i8, i8_titles = _library(tmp_path, "int8")
    try:
        with i8.db.read() as s:
            rows = s.execute(select(Vector)).scalars().all()
        assert rows and {r.dtype for r in rows} == {"int8"}
        assert {len(r.vector) for r in rows} == {388}
        assert all(r.checksum == hashlib.sha256(r.vector).hexdigest() for r in rows)
        with f32.db.read() as s:
            f32_rows = s.execute(select(Vector)).scalars().all()
        assert {r.dtype for r in f32_rows} == {"float32"}
        assert {len(r.vector) for r in f32_rows} == {1536}
        # Semantic search (ChromaDB, and the compact index re-ranked from the stored
        # int8 vectors) and similar: the same top paper as the float32 library.
        for q in QUERIES:
            want = f32_titles[semantic_search(f32, q, Filters(), 3, 0).results[0].doc_id]
            got = i8_titles[semantic_search(i8, q, Filters(), 3, 0).results[0].doc_id]
            assert got == want, q
            qv = i8.embedder().embed([q])[0]
            top = page_hits(i8, qv, 5, "int8")[0][0]
            assert i8_titles[top.doc_id] == want, q
            # Scores of the re-ranked int8 rows are within int8 error of float32's.
            ref = page_hits(f32, qv, 1, "chroma")[0][0].similarity
            assert abs(top.similarity - ref) < 5e-3
        for doc_id, title in i8_titles.items():
            other = next(d for d, t in f32_titles.items() if t == title)
            mine = similar_papers(i8, doc_id, 3)
            theirs = similar_papers(f32, other, 3)
            assert doc_id not in {p["doc_id"] for p in mine["similar_papers"]}
            assert (
                i8_titles[mine["similar_papers"][0]["doc_id"]]
                == f32_titles[theirs["similar_papers"][0]["doc_id"]]
            )
        # ChromaDB holds exactly the dequantized vectors, with the int8 blob's checksum.
        row = next(r for r in rows if r.kind == "paper")
        got = i8.vectors.get(PAPERS, [row.chroma_id], include=("embeddings", "metadatas"))
        assert got["metadatas"][0]["checksum"] == row.checksum
        emb = np.asarray(got["embeddings"][0], dtype=np.float32)
        assert float(np.abs(emb - decode_vector(row.vector, "int8", 384)).max()) < 1e-6
        # The deep consistency check compares ChromaDB with the decoded rows: clean.
        result = check(i8, deep=True)
        assert result.issues == [], [i.message for i in result.issues]
    finally:
        f32.close()
        i8.close()


# --- converting an existing library ------------------------------------------------------
def _chroma_checksums(ctx: Any) -> dict[str, str]:
    out = {}
    for name in (PAGES, PAPERS):
        for ids, res in ctx.vectors.iter_entries(name):
            out.update({i: m["checksum"] for i, m in zip(ids, res["metadatas"], strict=True)})
    return out


def _sqlite_checksums(ctx: Any) -> dict[str, str]:
    with ctx.db.read() as s:
        return dict(s.execute(select(Vector.chroma_id, Vector.checksum)).all())


def test_requantize_is_resumable_and_leaves_a_consistent_library(lib) -> None:
    ctx, ids = lib
    total = sum(v["vectors"] for v in storage_stats(ctx).values())
    assert storage_stats(ctx) == {"float32": {"vectors": total, "bytes": total * 1536}}
    before = semantic_search(ctx, QUERIES[0], Filters(), 3, 0).results[0].doc_id
    g0 = ctx.db.generation()

    # "Interrupted": stop after 5 rows. Each batch committed and reached ChromaDB.
    out = requantize(ctx, "int8", batch=2, limit=5)
    assert out["converted"] == 5 and out["remaining"] == total - 5 and not out["complete"]
    assert out["chroma_refreshed"] is None  # only a finished run refreshes
    assert ctx.db.generation() == g0 + 3  # one short write per batch (2 + 2 + 1)
    assert storage_stats(ctx)["int8"] == {"vectors": 5, "bytes": 5 * 388}
    assert _chroma_checksums(ctx) == _sqlite_checksums(ctx)
    assert check(ctx, INDEX_TYPES, deep=True).issues == []

    # Resume: the converted rows are skipped, the rest converted, ChromaDB refreshed.
    out = requantize(ctx, "int8", batch=4)
    assert out["converted"] == total - 5 and out["remaining"] == 0 and out["complete"]
    assert out["chroma_refreshed"] == {PAGES: 0, PAPERS: 0}
    assert storage_stats(ctx) == {"int8": {"vectors": total, "bytes": total * 388}}
    with ctx.db.read() as s:
        rows = s.execute(select(Vector)).scalars().all()
    assert all(r.checksum == hashlib.sha256(r.vector).hexdigest() for r in rows)
    assert min(r.generation for r in rows) > g0
    assert _chroma_checksums(ctx) == _sqlite_checksums(ctx)
    result = check(ctx, INDEX_TYPES, deep=True)
    assert result.issues == [], [i.message for i in result.issues]
    assert semantic_search(ctx, QUERIES[0], Filters(), 3, 0).results[0].doc_id == before

    # Nothing left to convert: a rerun changes nothing (no generation bump) ...
    g1 = ctx.db.generation()
    assert requantize(ctx, "int8")["converted"] == 0 and ctx.db.generation() == g1
    # ... but still repairs a ChromaDB entry left stale by a crash after a commit.
    row = next(r for r in rows if r.kind == "page")
    ctx.vectors.upsert(
        PAGES,
        [row.chroma_id],
        np.ones((1, 384), dtype=np.float32) / np.sqrt(384),
        [{"doc_id": "x", "checksum": "stale", "generation": 0}],
    )
    assert check(ctx, INDEX_TYPES, deep=True).issues
    out = requantize(ctx, "int8")
    assert out["converted"] == 0 and out["chroma_refreshed"] == {PAGES: 1, PAPERS: 0}
    assert check(ctx, INDEX_TYPES, deep=True).issues == []

    # New papers follow the setting (float32 here): the library mixes encodings fine.
    add_paper(ctx, "Cavity quench in niobium", ["Quench of a niobium cavity at high field."])
    assert set(storage_stats(ctx)) == {"int8", "float32"}
    assert check(ctx, INDEX_TYPES, deep=True).issues == []
    # Back up to float32: the values stay the int8-rounded ones (re-encoding cannot
    # restore precision), every row is float32 again and still consistent.
    out = requantize(ctx, "float32")
    assert out["complete"] and set(storage_stats(ctx)) == {"float32"}
    assert check(ctx, INDEX_TYPES, deep=True).issues == []
    assert semantic_search(ctx, QUERIES[0], Filters(), 3, 0).results[0].doc_id == before
    assert ids  # the fixture's papers are all still there
    with pytest.raises(ValueError):
        requantize(ctx, "int4")


def test_cli_requantize_asks_for_yes_warns_and_resumes(data_dir: Path) -> None:
    from refserver.cli import app

    runner = CliRunner()
    env = {"COLUMNS": "160"}
    total = sum(len(t["pages"]) + 1 for t in TOPICS)
    r = runner.invoke(app, ["index", "requantize", "--to", "int8"], env=env)
    assert r.exit_code == 2, r.output
    assert "lossy" in r.output and "--yes" in r.output
    r = runner.invoke(app, ["index", "stats", "--json"], env=env)
    assert json.loads(r.output)["sqlite_storage"] == {
        "float32": {"vectors": total, "bytes": total * 1536}
    }
    r = runner.invoke(
        app, ["index", "requantize", "--to", "int8", "--yes", "--limit", "4"], env=env
    )
    assert r.exit_code == 0, r.output
    assert "run the command again to resume" in r.output
    assert "REFSERVER_VECTOR_STORAGE=int8" in r.output
    r = runner.invoke(app, ["index", "requantize", "--to", "int8", "--yes"], env=env)
    assert r.exit_code == 0, r.output
    assert f"converted {total - 4} rows" in r.output and "ChromaDB refreshed" in r.output
    r = runner.invoke(app, ["index", "stats", "--json"], env=env)
    assert json.loads(r.output)["sqlite_storage"] == {
        "int8": {"vectors": total, "bytes": total * 388}
    }
    r = runner.invoke(app, ["index", "requantize", "--to", "float32"], env=env)
    assert r.exit_code == 0, r.output
    assert "cannot restore precision" in r.output
    r = runner.invoke(app, ["check", "--deep", "--json", "--types", ",".join(INDEX_TYPES)], env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["index", "requantize", "--to", "int4"], env=env)
    assert r.exit_code == 2
