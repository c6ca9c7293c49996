"""Fixtures for bulk-import tests: small paper-shaped PDFs made on the fly."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bulk.synth import make_paper_pdf


@pytest.fixture
def paper_dir(tmp_path: Path) -> Path:
    """Six distinct 2-page papers in a folder."""
    d = tmp_path / "in"
    d.mkdir()
    for i in range(6):
        make_paper_pdf(d / f"paper{i}.pdf", 100 + i, pages=2, words_per_page=120)
    return d
