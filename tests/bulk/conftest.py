"""Fixtures for bulk-import tests: small paper-shaped PDFs made on the fly."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from refserver.storage.library import PageInput, PaperInput
from tests.bulk.synth import make_paper_pdf


@pytest.fixture
def paper_dir(tmp_path: Path) -> Path:
    """Six distinct 2-page papers in a folder."""
    d = tmp_path / "in"
    d.mkdir()
    for i in range(6):
        make_paper_pdf(d / f"paper{i}.pdf", 100 + i, pages=2, words_per_page=120)
    return d


def add_paper(ctx: Any, **meta: Any) -> str:
    """Store a paper directly through the library's write path (random unit vectors)."""
    rng = np.random.default_rng(abs(hash(meta.get("title"))) % 2**32)
    body = meta.pop("body", "Body text about " + (meta.get("title") or "nothing"))

    def vec() -> np.ndarray:
        v = rng.standard_normal(384).astype(np.float32)
        return v / np.linalg.norm(v)

    data = PaperInput(
        file_sha256=uuid.uuid4().hex + uuid.uuid4().hex,
        file_size=1000,
        filename=f"{uuid.uuid4().hex[:8]}.pdf",
        page_count=1,
        pages=[PageInput(1, body, "text_layer", 0.9, vec())],
        metadata=meta,
        field_sources=dict.fromkeys(meta, "extracted"),
        paper_vector=vec(),
        model="all-MiniLM-L6-v2",
        model_revision="test",
    )
    return ctx.library.add_paper(data)


TRICKY = [
    {
        "title": "VESPA: Very large-scale Evolutionary & Selective Pressure Analyses "
        "{50%} of_cases $x^2$ #1 ~ back\\slash in mRNA",
        "authors": [
            "Andrew E. Webb",
            "Mary J. O’Connell",
            "Ludwig van Beethoven",
            "ATLAS Collaboration",
        ],
        "year": 2017,
        "journal": "PeerJ Computer Science",
        "doi": "10.7717/peerj-cs.118",
        "abstract": "Background. Large-scale analyses of protein coding sequences — ü, é, ß.",
        "keywords": ["evolution", "selection pressure"],
        "body": "vespa pipeline selective pressure codon models",
    },
    {
        "title": "한국어 논문 제목: 단백질 구조 분석",
        "authors": ["홍길동", "Kim Min-jun"],
        "year": 2020,
        "body": "korean paper about protein structure",
    },
    {"title": "A Title Only Record Without Authors", "body": "minimal record gravitational"},
]
