"""OCR runs the first language alone and falls back to every configured language."""

from __future__ import annotations

import pymupdf
import pytest

from refserver.ingest.extract import extract_pages
from refserver.ingest.ocr import available_languages, tesseract_available

KOREAN = (
    "딥러닝 기반 문서 검색 시스템의 설계와 평가\n"
    "본 연구에서는 과학 논문을 위한 의미 검색 시스템을 제안한다.\n"
    "실험 결과 제안한 방법이 기존 방법보다 정확도가 높았다."
)


def scanned(text: str, fontname: str) -> pymupdf.Document:
    src = pymupdf.open()
    page = src.new_page()
    page.insert_textbox(pymupdf.Rect(72, 72, 540, 400), text, fontname=fontname, fontsize=16)
    pix = page.get_pixmap(dpi=200)
    out = pymupdf.open()
    out.new_page(width=page.rect.width, height=page.rect.height).insert_image(page.rect, pixmap=pix)
    return out


@pytest.mark.skipif(not tesseract_available(), reason="tesseract is not installed")
def test_scanned_korean_page_is_read_with_korean() -> None:
    if "kor" not in available_languages():
        pytest.skip("tesseract-ocr-kor is not installed")
    pages = extract_pages(scanned(KOREAN, "korea"), ocr_languages="eng+kor", ocr_dpi=200)
    assert pages[0].source == "ocr"
    text = pages[0].text
    for word in ("문서", "검색", "논문", "정확도"):
        assert word in text, text


@pytest.mark.skipif(not tesseract_available(), reason="tesseract is not installed")
def test_scanned_english_page_needs_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import refserver.ingest.extract as extract

    calls: list[str] = []
    real = extract.ocr_textpage

    def counting(page, languages, dpi):  # noqa: ANN001, ANN202 - spy on the real OCR call
        calls.append(languages)
        return real(page, languages, dpi)

    monkeypatch.setattr(extract, "ocr_textpage", counting)
    text = (
        "Semantic search over scientific papers lets a researcher find work by meaning. "
        "We describe how the library stores every page, how the index is rebuilt from "
        "the database after a failure, and what the measured recall was on our test set. "
        "The results show that the method is fast and that nothing is lost in a restore."
    )
    pages = extract_pages(scanned(text, "helv"), ocr_languages="eng+kor", ocr_dpi=200)
    assert "scientific papers" in pages[0].text.lower()
    assert calls == ["eng"]
