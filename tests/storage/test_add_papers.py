"""``Library.add_papers``: a group of papers in one transaction, stored as ``add_paper`` would."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from refserver.context import AppContext
from refserver.safety.consistency import check
from refserver.storage.library import PageInput, PaperInput
from refserver.storage.models import Page, Paper, Vector
from refserver.storage.vectors import PAGES, PAPERS
from tests.conftest import make_settings


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


def _input(
    ctx: Any, i: int, *, doi: str | None = None, title: str | None = None, pages: int = 3
) -> PaperInput:
    """A paper with ``pages`` pages, deterministic vectors and a fixed doc_id; its file stored."""
    rng = np.random.default_rng(i)
    content = f"%PDF-1.4 stand-in for paper {i}".encode()
    src = Path(ctx.settings.data_dir) / f"in-{i}.pdf"
    src.write_bytes(content)
    sha = ctx.library.files.put(src, hashlib.sha256(content).hexdigest())
    meta: dict[str, Any] = {
        "title": title or f"Paper number {i} on coherent widget resonances",
        "authors": [f"Author{i} Surname{i}", "Second Writer"],
        "year": 2000 + i,
        "doi": doi or f"10.1234/widget.{i}",
        "abstract": f"Abstract {i} about widgets.",
    }
    return PaperInput(
        file_sha256=sha,
        file_size=len(content),
        filename=f"p{i}.pdf",
        page_count=pages,
        pages=[
            PageInput(n, f"page {n} of paper {i}: widgets resonate", "text_layer", 0.9, _unit(rng))
            for n in range(1, pages + 1)
        ],
        metadata=meta,
        field_sources=dict.fromkeys(meta, "extracted"),
        paper_vector=_unit(rng),
        model="all-MiniLM-L6-v2",
        model_revision="test",
        doc_id=f"doc-{i}-{uuid.UUID(int=i)}",
    )


def _stored(ctx: Any, doc_ids: list[str]) -> dict[str, Any]:
    """Everything stored for these papers, minus what differs by design (ids, generation)."""
    out: dict[str, Any] = {}
    with ctx.db.read() as s:
        for doc_id in doc_ids:
            paper = ctx.library.get(s, doc_id)
            pages = s.execute(
                select(Page.page_number, Page.text, Page.text_source, Page.quality)
                .where(Page.paper_id == paper.id)
                .order_by(Page.page_number)
            ).all()
            vecs = s.execute(
                select(
                    Vector.kind,
                    Vector.page_number,
                    Vector.chroma_id,
                    Vector.model,
                    Vector.dimension,
                    Vector.dtype,
                    Vector.checksum,
                )
                .where(Vector.paper_id == paper.id)
                .order_by(Vector.kind, Vector.page_number)
            ).all()
            fts = s.execute(
                text(
                    "SELECT f.title, f.authors, (SELECT count(*) FROM paper_bodies_fts "
                    "WHERE paper_bodies_fts MATCH 'resonate' AND rowid = :id) "
                    "FROM papers_fts f WHERE f.rowid = :id"
                ),
                {"id": paper.id},
            ).all()
            out[doc_id] = {
                "paper": (paper.title, paper.doi, paper.file_sha256, paper.duplicate_of),
                "pages": [tuple(r) for r in pages],
                "vectors": [tuple(r) for r in vecs],
                "fts": [tuple(r) for r in fts],
                "chroma": _chroma(ctx, paper, [r.chroma_id for r in vecs if r.kind == "page"]),
            }
    return out


def _chroma(ctx: Any, paper: Paper, page_ids: list[str]) -> dict[str, Any]:
    got: dict[str, Any] = {}
    for name, ids in ((PAGES, page_ids), (PAPERS, [paper.doc_id])):
        res = ctx.vectors.get(name, ids, include=("metadatas", "embeddings"))
        for cid, meta, emb in zip(res["ids"], res["metadatas"], res["embeddings"], strict=True):
            # The generation must be the row's; the number itself differs by design.
            assert meta["generation"] == paper.generation
            assert meta["paper_id"] == paper.id
            rest = {k: v for k, v in meta.items() if k not in ("generation", "paper_id")}
            got[cid] = (rest, np.round(np.asarray(emb, dtype=np.float32), 6).tolist())
    assert set(got) == {*page_ids, paper.doc_id}
    return got


def test_add_papers_stores_what_add_paper_would(ctx: Any, tmp_path: Path) -> None:
    inputs = [_input(ctx, i, pages=2 + i % 3) for i in range(5)]
    g0 = ctx.db.generation()
    ids = ctx.library.add_papers(inputs)
    assert ids == [d.doc_id for d in inputs]
    assert ctx.db.generation() == g0 + 1  # one transaction for the group
    with ctx.db.read() as s:
        gens = set(s.execute(select(Paper.generation)).scalars())
    assert gens == {g0 + 1}

    one_by_one = AppContext(make_settings(tmp_path / "one-by-one"))
    try:
        for data in [_input(one_by_one, i, pages=2 + i % 3) for i in range(5)]:
            one_by_one.library.add_paper(data)
        assert _stored(ctx, ids) == _stored(one_by_one, ids)
        for name in (PAGES, PAPERS):
            assert ctx.vectors.count(name) == one_by_one.vectors.count(name)
    finally:
        one_by_one.close()
    assert ctx.vectors.count(PAGES) == sum(len(d.pages) for d in inputs)
    assert ctx.vectors.count(PAPERS) == 5
    assert check(ctx, deep=True).issues == []


def test_duplicates_within_one_group_are_flagged(ctx: Any) -> None:
    first, second = _input(ctx, 1, doi="10.5555/Same.DOI"), _input(ctx, 2, doi="10.5555/same.doi")
    title = "A long enough shared title about widget resonances"
    third, fourth = _input(ctx, 3, title=title), _input(ctx, 4, title=title)
    fourth.metadata["authors"] = ["Author3 Surname3"]  # same first author as the third
    ids = ctx.library.add_papers([first, second, third, fourth])
    with ctx.db.read() as s:
        flags = {
            d: (p.duplicate_of, p.duplicate_reason) for d in ids if (p := ctx.library.get(s, d))
        }
    assert flags[ids[0]] == (None, None)
    assert flags[ids[1]] == (ids[0], "same_doi")
    assert flags[ids[2]] == (None, None)
    assert flags[ids[3]] == (ids[2], "same_title_first_author")
    assert check(ctx, deep=True).issues == []


def test_a_failing_paper_fails_the_whole_group(ctx: Any) -> None:
    """All or nothing: nothing of the group reaches SQLite or ChromaDB."""
    ctx.library.add_paper(_input(ctx, 0))
    g0 = ctx.db.generation()
    bad = _input(ctx, 2)
    bad.pages.append(bad.pages[0])  # the same page twice: a constraint violation
    with pytest.raises(IntegrityError):
        ctx.library.add_papers([_input(ctx, 1), bad, _input(ctx, 3)])
    assert ctx.db.generation() == g0
    with ctx.db.read() as s:
        assert s.execute(select(func.count()).select_from(Paper)).scalar_one() == 1
        assert s.execute(select(func.count()).select_from(Vector)).scalar_one() == 4
    assert ctx.vectors.count(PAPERS) == 1 and ctx.vectors.count(PAGES) == 3
    # The good ones store fine afterwards, each on its own.
    ctx.library.add_papers([_input(ctx, 1)])
    ctx.library.add_papers([_input(ctx, 3)])
    assert check(ctx, deep=True).issues == []


def test_add_papers_of_nothing_writes_nothing(ctx: Any) -> None:
    g0 = ctx.db.generation()
    assert ctx.library.add_papers([]) == []
    assert ctx.db.generation() == g0
