"""Page layout blocks and preview rendering on real pages."""

from __future__ import annotations

from pathlib import Path

import pymupdf
import pytest

from refserver.ingest.layout import page_layout
from refserver.ingest.preview import render_preview
from tests.ingest.conftest import CORPUS


def test_layout_first_page_has_title_heading_and_text() -> None:
    with pymupdf.open(CORPUS / "pdfs" / "dev_plosone_bastien2018.pdf") as doc:
        lay = page_layout(doc[0])
    assert lay["page"] == 1 and lay["width"] == 612 and lay["height"] == 792
    types = {b["type"] for b in lay["blocks"]}
    assert {"heading", "text", "image"} <= types
    headings = [b["text"] for b in lay["blocks"] if b["type"] == "heading"]
    assert any(h.startswith("Coupled ultradian growth") for h in headings)
    for b in lay["blocks"]:
        x0, y0, x1, y1 = b["bbox"]
        assert x0 <= x1 and y0 <= y1
        assert isinstance(b["font_size"], float)
    body = [b for b in lay["blocks"] if b["type"] == "text"]
    assert any("gravitropic" in b["text"].lower() for b in body)


def test_layout_finds_a_ruled_table() -> None:
    doc = pymupdf.open()
    page = doc.new_page()
    x0, y0, w, h = 72, 100, 120, 24
    rows = [["Sample", "Mass (g)", "Length"], ["A", "1.20", "3.4"], ["B", "0.95", "2.9"]]
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            rect = pymupdf.Rect(x0 + c * w, y0 + r * h, x0 + (c + 1) * w, y0 + (r + 1) * h)
            page.draw_rect(rect, color=(0, 0, 0), width=0.8)
            page.insert_text((rect.x0 + 4, rect.y1 - 8), cell, fontsize=10)
    page.insert_text((72, 300), "Body text below the table. " * 3, fontsize=10)
    lay = page_layout(page)
    tables = [b for b in lay["blocks"] if b["type"] == "table"]
    assert len(tables) == 1
    assert "Mass (g)" in tables[0]["text"] and "0.95" in tables[0]["text"]
    assert not any(b["type"] == "text" and "0.95" in b["text"] for b in lay["blocks"])
    assert page_layout(page, tables=False)["blocks"]


def test_render_preview_png(tmp_path: Path) -> None:
    out = tmp_path / "previews" / "p.png"
    with pymupdf.open(CORPUS / "pdfs" / "dev_jacow_ipac2018.pdf") as doc:
        render_preview(doc, out, width=300)
        render_preview(doc, tmp_path / "p2.png", page=2, width=120)
        with pytest.raises(ValueError):
            render_preview(doc, tmp_path / "bad.png", page=3)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pix = pymupdf.Pixmap(str(out))
    assert pix.width == 300 and pix.height > 300
    assert pymupdf.Pixmap(str(tmp_path / "p2.png")).width == 120
    assert not list(tmp_path.glob("**/.*.tmp"))
