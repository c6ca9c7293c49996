"""Helpers for the backup tests: real libraries built through the pipeline or the write path."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from refserver.storage.library import PageInput, PaperInput
from refserver.storage.models import Paper, Vector
from refserver.storage.vectors import PAGES, PAPERS
from tests.conftest import ingest_pdf, make_text_pdf  # noqa: F401  (ingest_pdf: re-exported)

WORDS = [
    "beam",
    "cavity",
    "resonator",
    "photon",
    "lattice",
    "quantum",
    "spectrum",
    "detector",
    "neutron",
    "proton",
    "plasma",
    "magnet",
    "coupling",
    "impedance",
    "wakefield",
    "emittance",
    "bunch",
    "undulator",
    "vacuum",
]


def synthetic_pdf(tmp: Path, i: int, pages: int = 1) -> Path:
    rng = np.random.default_rng(i)
    texts = [
        f"Study {i} of {WORDS[i % len(WORDS)]} systems. "
        + " ".join(rng.choice(WORDS, 120).tolist())
        for _ in range(pages)
    ]
    return make_text_pdf(tmp / f"paper-{i}.pdf", texts, title=f"Synthetic study {i}")


def add_direct(ctx: Any, tmp: Path, i: int, pages: int = 2) -> str:
    """A paper through the library's write path with random unit vectors (no model: fast)."""
    pdf = synthetic_pdf(tmp, i, pages)
    sha = ctx.files.put(pdf)
    rng = np.random.default_rng(10_000 + i)

    def unit() -> np.ndarray:
        v = rng.standard_normal(384).astype(np.float32)
        return v / np.linalg.norm(v)

    page_inputs = [
        PageInput(n + 1, " ".join(rng.choice(WORDS, 300).tolist()), "text_layer", 0.9, unit())
        for n in range(pages)
    ]
    return ctx.library.add_paper(
        PaperInput(
            file_sha256=sha,
            file_size=pdf.stat().st_size,
            filename=pdf.name,
            page_count=pages,
            pages=page_inputs,
            metadata={"title": f"Synthetic study {i}", "year": 2000 + i % 25},
            field_sources={"title": "test"},
            paper_vector=unit(),
            model="all-MiniLM-L6-v2",
            model_revision="test",
        )
    )


def library_state(ctx: Any) -> dict[str, Any]:
    """What must survive a round trip: papers, file checksums, vectors, Chroma contents."""
    with ctx.db.read() as s:
        papers = {
            p.doc_id: (p.title, p.file_sha256, p.page_count)
            for p in s.execute(select(Paper)).scalars()
        }
        vectors = {v.chroma_id: v.checksum for v in s.execute(select(Vector)).scalars()}
    files = {}
    for sha, path in ctx.files.iter_files():
        files[sha] = hashlib.sha256(path.read_bytes()).hexdigest()
    return {
        "papers": papers,
        "files": files,
        "vectors": vectors,
        "generation": ctx.db.generation(),
        "chroma": {name: ctx.vectors.count(name) for name in (PAGES, PAPERS)},
    }


def chroma_ids(ctx: Any) -> set[str]:
    ids: set[str] = set()
    for name in (PAGES, PAPERS):
        for chunk, _res in ctx.vectors.iter_entries(name):
            ids |= set(chunk)
    return ids


def assert_consistent(ctx: Any) -> None:
    """SQLite's vectors are exactly ChromaDB's; every file matches its name."""
    with ctx.db.read() as s:
        want = set(s.execute(select(Vector.chroma_id)).scalars())
        needed = set(s.execute(select(Paper.file_sha256)).scalars())
    assert chroma_ids(ctx) == want
    for sha in needed:
        path = ctx.files.path_for(sha)
        assert path.exists(), sha
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
