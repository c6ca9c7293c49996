"""OCR through PyMuPDF + system Tesseract on rendered corpus pages (one page each)."""

from __future__ import annotations

import re
from pathlib import Path

import pymupdf
import pytest

from refserver.ingest.extract import extract_pages
from refserver.ingest.metadata import extract_metadata
from refserver.ingest.ocr import (
    OcrUnavailable,
    available_languages,
    find_tessdata,
    ocr_page,
    tesseract_available,
)
from tests.ingest.conftest import CORPUS, corpus_manifest, make_garbage_text_layer

needs_tesseract = pytest.mark.skipif(
    not tesseract_available(),
    reason="Tesseract language data not found (install tesseract-ocr tesseract-ocr-eng)",
)


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z]{4,}", text)}


def _image_only(src: pymupdf.Page) -> pymupdf.Document:
    doc = pymupdf.open()
    page = doc.new_page(width=src.rect.width, height=src.rect.height)
    page.insert_image(page.rect, pixmap=src.get_pixmap(dpi=150))
    return doc


def test_tessdata_discovery_is_consistent() -> None:
    if tesseract_available():
        assert find_tessdata() and "eng" in available_languages()
    else:
        assert not available_languages() - {"osd"}


@needs_tesseract
def test_image_only_page_is_ocred() -> None:
    src = pymupdf.open(CORPUS / "pdfs" / "dev_jacow_ipac2018.pdf")
    doc = _image_only(src[0])
    assert doc[0].get_text().strip() == ""
    pages = extract_pages(doc, ocr_languages="eng", ocr_dpi=150)
    page = pages[0]
    assert page.source == "ocr" and page.ocr_attempted and page.quality > 0.8
    original = _words(src[0].get_text())
    found = _words(page.text)
    assert len(original & found) / len(original) > 0.8
    assert {"tuner", "cavity", "fermilab"} <= found


@needs_tesseract
def test_garbage_text_layer_is_replaced_by_ocr(tmp_path: Path) -> None:
    """A letter-shifted text layer scores low, gets OCR'd, and metadata reads the OCR layout."""
    name = "dev_peerjcs_bogner2019.pdf"
    truth = next(e["truth"] for e in corpus_manifest() if e["file"].endswith(name))
    src = pymupdf.open(CORPUS / "pdfs" / name)
    path = tmp_path / "garbage.pdf"
    make_garbage_text_layer(src[0], path)
    with pymupdf.open(path) as doc:
        layer = doc[0].get_text()
        assert "Design patterns" not in layer and "Ghvljq sdwwhuqv" in layer
        pages = extract_pages(doc, ocr_languages="eng", ocr_dpi=150)
        meta = extract_metadata(doc, pages)
    assert pages[0].source == "ocr" and pages[0].ocr_attempted
    assert "design patterns" in pages[0].text.lower()
    assert meta.title and meta.title.lower() == truth["title"].lower()
    assert [a.split()[-1] for a in meta.authors] == ["Bogner", "Wagner", "Zimmermann"]


def test_ocr_page_without_language_data_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    import refserver.ingest.ocr as ocr_mod

    monkeypatch.setattr(ocr_mod, "available_languages", lambda: frozenset())
    doc = pymupdf.open()
    page = doc.new_page()
    with pytest.raises(OcrUnavailable, match="tesseract"):
        ocr_page(page)
