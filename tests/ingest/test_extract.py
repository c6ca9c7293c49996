"""Page extraction, text cleaning and chunking on real and synthetic PDFs."""

from __future__ import annotations

import pymupdf
import pytest

from refserver.ingest.extract import (
    PageText,
    chunk_words,
    clean_text,
    extract_pages,
    repair_accents,
)
from tests.ingest.conftest import CORPUS


@pytest.mark.parametrize(
    ("broken", "fixed"),
    [
        ("Ste\u00b4phane Douady", "Stéphane Douady"),
        ("Universite\u00b4 Paris-Diderot", "Université Paris-Diderot"),
        ("Sant Cugat del Vall`es", "Sant Cugat del Vallès"),
        ("Fran\u00b8cois", "François"),
        ("Mu\u00a8ller", "Müller"),
        ("Dvo\u02c7ra\u00b4k", "Dvořák"),
        ("S. J\u00b4ez\u00b4equel", "S. Jézéquel"),
        ("e\u0301cole", "école"),  # combining mark -> NFC
    ],
)
def test_repair_accents(broken: str, fixed: str) -> None:
    assert repair_accents(broken) == fixed


def test_repair_accents_leaves_ordinary_text() -> None:
    for text in ("use `quotes' here", "5\u00b4-end of the gene", "x ~ y and a^2", "plain"):
        assert repair_accents(text) == text


def test_clean_text_ligatures_hyphens_whitespace() -> None:
    raw = (
        "The ﬁrst perfor-\nmance test of the self-\nhealing and self-healing   scripts\n"
        "was  ﬂawless.\n\nA new para-\n\ngraph\tends here."
    )
    assert clean_text(raw) == (
        "The first performance test of the self-healing and self-healing scripts was flawless."
        "\n\nA new paragraph ends here."
    )


def test_clean_text_keeps_hyphen_before_capital() -> None:
    assert clean_text("the Kaplan-\nMeier estimate") == "the Kaplan-Meier estimate"


def test_chunk_words_overlap_and_coverage() -> None:
    words = [f"w{i}" for i in range(330)]
    chunks = chunk_words(" ".join(words), size=150, overlap=20)
    assert [len(c.split()) for c in chunks] == [150, 150, 70]
    assert chunks[1].split()[0] == "w130"  # 20 words of overlap
    assert chunks[-1].split()[-1] == "w329"
    assert chunk_words("", 150, 20) == []
    assert chunk_words("one two", 150, 20) == ["one two"]
    assert chunk_words(" ".join(words[:150]), 150, 20) == [" ".join(words[:150])]
    with pytest.raises(ValueError):
        chunk_words("a b", size=10, overlap=10)


def test_chunk_words_splits_unspaced_cjk() -> None:
    text = "本研究分析了气候变化对高山地区植物生长的影响" * 10
    chunks = chunk_words(text, size=3, overlap=1)
    assert all(len(w) <= 40 for c in chunks for w in c.split())


def test_extract_pages_real_paper_progress() -> None:
    calls: list[tuple[int, int]] = []
    with pymupdf.open(CORPUS / "pdfs" / "dev_jner2016.pdf") as doc:
        pages = extract_pages(doc, progress=lambda d, t: calls.append((d, t)))
    assert len(pages) == 9 and calls[-1] == (9, 9) and len(calls) == 9
    assert all(isinstance(p, PageText) for p in pages)
    assert [p.number for p in pages] == list(range(1, 10))
    first = pages[0]
    assert first.source == "text_layer" and first.quality > 0.9 and not first.ocr_attempted
    assert "Functional Electrical Stimulation" in first.text
    assert "ﬁ" not in first.text and "  " not in first.text
    assert "\n\n" in first.text  # paragraph breaks kept


def test_extract_pages_cancel_returns_pages_done() -> None:
    with pymupdf.open(CORPUS / "pdfs" / "dev_jner2016.pdf") as doc:
        done: list[int] = []
        pages = extract_pages(
            doc,
            ocr=False,
            should_cancel=lambda: len(done) >= 3,
            progress=lambda d, t: done.append(d),
        )
    assert len(pages) == 3


def test_blank_page_is_none_without_ocr() -> None:
    doc = pymupdf.open()
    doc.new_page()
    pages = extract_pages(doc, ocr=True)  # nothing to OCR on a blank page
    assert pages[0].source == "none" and pages[0].quality == 0.0 and not pages[0].ocr_attempted


def test_image_page_without_ocr_is_none() -> None:
    src = pymupdf.open(CORPUS / "pdfs" / "dev_jacow_ipac2018.pdf")
    doc = pymupdf.open()
    page = doc.new_page(width=src[0].rect.width, height=src[0].rect.height)
    page.insert_image(page.rect, pixmap=src[0].get_pixmap(dpi=50))
    pages = extract_pages(doc, ocr=False)
    assert pages[0].source == "none" and not pages[0].ocr_attempted
