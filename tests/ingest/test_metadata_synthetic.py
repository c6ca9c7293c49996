"""Metadata rules on invented PDFs that reproduce real-world layout traps."""

from __future__ import annotations

from pathlib import Path

import pymupdf
import pytest

from refserver.ingest.extract import extract_pages
from refserver.ingest.metadata import ExtractedMetadata, extract_metadata, normalize_doi
from tests.ingest.conftest import (
    make_caps_long_byline,
    make_cover_sheet,
    make_korean_paper,
    make_tail_of_other_article,
)


def _run(path: Path) -> ExtractedMetadata:
    with pymupdf.open(path) as doc:
        return extract_metadata(doc, extract_pages(doc, ocr=False))


@pytest.mark.parametrize(
    "builder",
    [make_tail_of_other_article, make_cover_sheet, make_caps_long_byline, make_korean_paper],
)
def test_trap_layouts(builder, synth_dir: Path) -> None:
    path = synth_dir / f"{builder.__name__}.pdf"
    truth = builder(path)
    meta = _run(path)
    assert meta.title == truth["title"]
    assert meta.authors == truth["authors"]
    assert meta.year == truth["year"]
    assert meta.doi == truth["doi"]
    assert meta.abstract and len(meta.abstract.split()) > 20
    if "keywords" in truth:
        assert meta.keywords == truth["keywords"]


def test_foreign_doi_never_used_when_own_doi_missing(synth_dir: Path) -> None:
    path = synth_dir / "tail.pdf"
    make_tail_of_other_article(path)
    doc = pymupdf.open(path)
    for page in doc:
        for rect in page.search_for("https://doi.org/10.5555/jss.2020.0042"):
            page.add_redact_annot(rect)
        page.apply_redactions()
    stripped = synth_dir / "tail-no-own-doi.pdf"
    doc.save(stripped)
    meta = _run(stripped)
    assert meta.doi is None
    assert meta.title == "Slow relaxation of strained polymer films under cyclic heating"
    assert meta.keywords == ["polymer films", "relaxation", "cyclic heating"]


def test_junk_info_title_is_ignored_and_good_one_used_when_layout_fails(tmp_path: Path) -> None:
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text(
        (72, 100), "Some body text of a page without any large title. " * 2, fontsize=10
    )
    doc.set_metadata({"title": "Microsoft Word - draft_v3.docx", "author": "jsmith"})
    p1 = tmp_path / "junk.pdf"
    doc.save(p1)
    assert _run(p1).title is None
    doc.set_metadata(
        {"title": "Thermal limits of alpine plant growth", "author": "Ana Silva; Jonas Weber"}
    )
    p2 = tmp_path / "good.pdf"
    doc.save(p2)
    meta = _run(p2)
    assert (
        meta.title == "Thermal limits of alpine plant growth"
        and meta.sources["title"] == "pdf_info"
    )


def test_empty_and_blank_documents() -> None:
    doc = pymupdf.open()
    doc.new_page()
    meta = extract_metadata(doc, extract_pages(doc, ocr=False))
    assert meta == ExtractedMetadata(sources={}) or (meta.title is None and meta.doi is None)


@pytest.mark.parametrize(
    ("raw", "doi"),
    [
        ("https://doi.org/10.1000/xyz123.", "10.1000/xyz123"),
        ("doi:10.1016/0022-2836(81)90087-5),", "10.1016/0022-2836(81)90087-5"),
        ("(10.1371/journal.pone.0194893)", None),
        ("10.1371/journal.pone.0194893);", "10.1371/journal.pone.0194893"),
        ("not a doi", None),
    ],
)
def test_normalize_doi(raw: str, doi: str | None) -> None:
    assert normalize_doi(raw) == doi
