"""Search fixtures: small libraries written straight through Library.add_paper.

Vectors are real model embeddings of the page texts, so semantic ranking is
the real thing; building through the store keeps the tests fast.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from refserver.embedding.model import mean_vector
from refserver.storage.library import PageInput, PaperInput
from tests.conftest import make_settings

TOPICS: list[dict[str, Any]] = [
    {
        "title": "Superconducting radio frequency cavities for particle accelerators",
        "authors": ["Alice Cavity", "Bob Niobium"],
        "year": 2018,
        "journal": "Physical Review Accelerators",
        "pages": [
            "Niobium cavities are cooled with liquid helium to reach high accelerating gradients.",
            "The quality factor of the resonator drops when the surface field exceeds the quench limit.",
        ],
    },
    {
        "title": "Fossil mollusks of the Cretaceous seaway",
        "authors": ["Carla Shell", "Dan Ammonite"],
        "year": 2019,
        "journal": "Journal of Paleontology",
        "pages": [
            "Ammonites and bivalves were collected from marine shale deposits in the western interior.",
            "Shell morphology indicates a shallow warm sea with abundant gastropods.",
        ],
    },
    {
        "title": "Deep learning for protein structure prediction",
        "authors": ["Eve Fold", "Frank Müller"],
        "year": 2021,
        "journal": "Bioinformatics",
        "pages": [
            "Neural networks predict the three dimensional fold of amino acid chains.",
            "Attention layers capture contacts between residues far apart in the sequence.",
        ],
    },
    {
        "title": "Energy efficiency of green software engineering",
        "authors": ["Grace Energy"],
        "year": 2019,
        "journal": "PeerJ Computer Science",
        "pages": [
            "Software developers rarely measure the energy consumption of their applications.",
            "Mobile apps drain the battery when background services poll the network.",
        ],
    },
    {
        "title": "Higgs boson decays to two photons at the LHC",
        "authors": ["Hans Collider", "Ines Photon"],
        "year": 2015,
        "journal": "Journal of High Energy Physics",
        "pages": [
            "Proton collisions at thirteen TeV produced the Higgs boson decaying into diphoton pairs.",
            "The invariant mass spectrum shows a narrow resonance near 125 GeV.",
        ],
    },
    {
        "title": "Clinical outcomes of hypertension treatment in elderly patients",
        "authors": ["Jack Heart"],
        "year": 2014,
        "journal": "Clinical Science",
        "pages": [
            "Blood pressure lowering reduced stroke risk in patients older than eighty years.",
            "Adverse events included dizziness and kidney function decline.",
        ],
    },
]


def add_paper(
    ctx: Any,
    title: str,
    pages: list[str],
    *,
    authors: list[str] | None = None,
    year: int | None = None,
    journal: str | None = None,
    abstract: str | None = None,
    doi: str | None = None,
) -> str:
    """Store a paper with real embeddings of its page texts; returns its doc_id."""
    emb = ctx.embedder()
    vecs = emb.embed(pages)
    head = emb.embed([title])[0]
    sha = hashlib.sha256(f"{title}{uuid.uuid4()}".encode()).hexdigest()
    return ctx.library.add_paper(
        PaperInput(
            file_sha256=sha,
            file_size=1000,
            filename=f"{sha[:8]}.pdf",
            page_count=len(pages),
            pages=[
                PageInput(number=i + 1, text=t, source="text_layer", quality=1.0, vector=v)
                for i, (t, v) in enumerate(zip(pages, vecs, strict=True))
            ],
            metadata={
                "title": title,
                "authors": authors or [],
                "year": year,
                "journal": journal,
                "abstract": abstract,
                "doi": doi,
            },
            field_sources={},
            paper_vector=mean_vector(np.vstack([vecs, head[None, :]])),
            model=emb.name,
            model_revision=emb.revision,
        )
    )


@pytest.fixture
def lib(ctx: Any) -> tuple[Any, dict[str, str]]:
    """A context holding the TOPICS papers: (ctx, {title: doc_id})."""
    ids = {}
    for t in TOPICS:
        ids[t["title"]] = add_paper(
            ctx,
            t["title"],
            t["pages"],
            authors=t["authors"],
            year=t["year"],
            journal=t["journal"],
        )
    return ctx, ids


def clustered(rng: np.random.Generator, n: int, centers: np.ndarray, noise: float) -> np.ndarray:
    """``n`` unit vectors around random ``centers`` (like real embeddings)."""
    x = centers[rng.integers(0, len(centers), n)] + rng.normal(
        scale=noise, size=(n, centers.shape[1])
    )
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def add_vector_paper(ctx: Any, sha: str, n: int, vecs: np.ndarray, **metadata: Any) -> str:
    """A paper whose pages carry ``vecs`` as they are (no model), through the library."""
    return ctx.library.add_paper(
        PaperInput(
            file_sha256=sha,
            file_size=1,
            filename=f"{n}.pdf",
            page_count=len(vecs),
            pages=[PageInput(j + 1, f"page {j}", "text_layer", 1.0, v) for j, v in enumerate(vecs)],
            metadata=metadata,
            field_sources={},
            paper_vector=vecs.mean(0),
            model="all-MiniLM-L6-v2",
            model_revision="test",
        )
    )


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A data folder with the TOPICS papers, for CLI tests (closed: the CLI opens it)."""
    from refserver.config import get_settings
    from refserver.context import AppContext

    data = tmp_path / "data"
    ctx = AppContext(make_settings(data))
    try:
        for t in TOPICS:
            add_paper(ctx, t["title"], t["pages"], authors=t["authors"], year=t["year"])
    finally:
        ctx.close()  # the CLI takes the ChromaDB owner lock itself
    monkeypatch.setenv("REFSERVER_DATA_DIR", str(data))
    get_settings.cache_clear()
    yield data
    get_settings.cache_clear()
